import Foundation
import Logging
import MoireCore
import MoireStorage
import MoireTransport

/// A stage thread that reads the raw bus until the run's `stop` and hands each item to `handle`.
final class BusStage: @unchecked Sendable {
    let name: String
    private let subscriber: BusSubscriber
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)
    private let handle: (BusItem) -> Bool

    /// `handle` returns false to end the stage.
    init(name: String, endpoint: String, handle: @escaping (BusItem) -> Bool) throws {
        self.name = name
        subscriber = try BusSubscriber(endpoint: endpoint)
        self.handle = handle
    }

    func start() {
        let t = Thread { [self] in
            defer { done.signal() }
            while true {
                guard let item = try? subscriber.next(timeoutMs: 200) else { continue }
                if !handle(item) { return }
            }
        }
        t.name = "moire.stage.\(name)"
        thread = t
        t.start()
    }

    /// Waits for the stage to end; false on timeout.
    func join(timeoutSeconds: Double) -> Bool {
        done.wait(timeout: .now() + timeoutSeconds) == .success
    }
}

/// Writes every raw frame to the OME-TIFF recording. Recording has priority: it never skips.
final class RecorderStage: @unchecked Sendable {
    private(set) var writer: OMETiffWriter?
    private(set) var summary: RecordingSummary?
    private(set) var error: MoireError?
    private let layout: RecordingLayout
    private let path: String
    private let logger: Logger
    var onError: (MoireError) -> Void = { _ in }

    init(path: String, layout: RecordingLayout, logger: Logger) throws {
        self.path = path
        self.layout = layout
        self.logger = logger
        writer = try OMETiffWriter(path: path, layout: layout, logger: logger)
    }

    func handle(_ item: BusItem) -> Bool {
        switch item {
        case .frame(let h, let payload):
            guard error == nil, let writer else { return true }
            do { try writer.write(header: h, payload: payload.bytes) } catch let e as MoireError {
                error = e
                logger.error("recording failed", metadata: ["error": "\(e)"])
                onError(e)
            } catch {}
            return true
        case .run(_, let json):
            guard let ev = try? JSONDecoder().decode(RunEvent.self, from: json), ev.event == "stop" else { return true }
            finish()
            return false
        }
    }

    func finish() {
        guard let w = writer else { return }
        writer = nil
        do { summary = try w.finish() } catch let e as MoireError {
            if error == nil { error = e }
        } catch {}
    }
}

/// Forwards frames and lifecycle messages to the result bus (PUB).
final class PublisherStage: @unchecked Sendable {
    let publisher: ResultPublisher
    let publishRaw: Bool
    private(set) var forwarded = 0

    init(endpoint: String, publishRaw: Bool) throws {
        publisher = try ResultPublisher(endpoint: endpoint)
        self.publishRaw = publishRaw
    }

    func handle(_ item: BusItem) -> Bool {
        switch item {
        case .frame(let h, let payload):
            if publishRaw { try? publisher.publish(header: h, payload: payload.bytes); forwarded += 1 }
            return true
        case .run(_, let json):
            guard let ev = try? JSONDecoder().decode(RunEvent.self, from: json) else { return true }
            if ev.event == "start", let s = try? JSONDecoder().decode(RunStart.self, from: json) { try? publisher.publishStart(s) }
            if ev.event == "stop", let s = try? JSONDecoder().decode(RunStop.self, from: json) {
                try? publisher.publishStop(s)
                return false
            }
            return true
        }
    }
}
