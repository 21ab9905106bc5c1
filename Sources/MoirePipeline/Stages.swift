import Foundation
import Logging
import MoireCore
import MoireStorage
import MoireTransport

/// A stage thread that reads one or more buses until its handler says stop, handing each item
/// (with the index of the bus it came from) to `handle`.
// Sendable by hand: immutable after init; its thread alone reads the subscribers; `done` signals the end.
final class BusStage: @unchecked Sendable {
    let name: String
    private let subscribers: [BusSubscriber]
    private let done = DispatchSemaphore(value: 0)
    private let handle: (BusItem, Int) -> Bool

    /// `handle` returns false to end the stage.
    init(name: String, endpoints: [String], handle: @escaping (BusItem, Int) -> Bool) throws {
        self.name = name
        subscribers = try endpoints.map { try BusSubscriber(endpoint: $0) }
        self.handle = handle
    }

    convenience init(name: String, endpoint: String, handle: @escaping (BusItem) -> Bool) throws {
        try self.init(name: name, endpoints: [endpoint], handle: { item, _ in handle(item) })
    }

    /// The thread is not kept: a stored thread whose closure holds the stage would keep the stage,
    /// its sockets and everything its handler holds alive after the run.
    func start() {
        let t = Thread { [self] in
            defer { done.signal() }
            let wait = subscribers.count == 1 ? 200 : 2
            while true {
                for (i, s) in subscribers.enumerated() {
                    while let item = try? s.next(timeoutMs: wait) {
                        if !handle(item, i) { return }
                        if subscribers.count > 1 { break }
                    }
                }
            }
        }
        t.name = "moire.stage.\(name)"
        t.start()
    }

    /// Waits for the stage to end; false on timeout.
    func join(timeoutSeconds: Double) -> Bool {
        done.wait(timeout: .now() + timeoutSeconds) == .success
    }
}

/// Writes every raw frame to the OME-TIFF recording. Recording has priority: it never skips.
// Sendable by hand: the writer is used only by the recorder's stage thread; results are read after join().
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
            do {
                try writer.write(header: h, payload: payload.bytes)
            } catch {
                // Recording has priority: any failure stops the run safely, with its message.
                let failure = storageError(error)
                self.error = failure
                logger.error("recording failed", metadata: ["error": "\(failure)"])
                onError(failure)
            }
            return true
        case .run(_, let json):
            guard let ev = try? JSONDecoder().decode(RunEvent.self, from: json), ev.event == "stop" else { return true }
            finish()
            return false
        }
    }

    /// Any error of the writer as a `MoireError` naming the recording.
    private func storageError(_ error: Error) -> MoireError {
        (error as? MoireError) ?? MoireError(.storage, "\(error)", place: path)
    }

    func finish() {
        guard let w = writer else { return }
        writer = nil
        do {
            summary = try w.finish()
        } catch {
            let failure = storageError(error)
            logger.error("closing the recording failed", metadata: ["error": "\(failure)"])
            if self.error == nil { self.error = failure }
        }
    }
}

/// Forwards frames and lifecycle messages to the result bus (PUB): raw frames from bus 0 (when
/// asked), derived frames (sr, wf, …) from the other buses. The run's `stop` goes out last, once
/// every bus has stopped.
// Sendable by hand: used by its stage thread only; counts read after join().
final class PublisherStage: @unchecked Sendable {
    let publisher: ResultPublisher
    let publishRaw: Bool
    let buses: Int
    private(set) var forwarded = 0
    private(set) var derived = 0
    private var stops = 0
    private var rawStop: RunStop?

    init(
        endpoint: String, publishRaw: Bool, buses: Int = 1, limits: ResultBusLimits = ResultBusLimits(),
        logger: Logger = Logger(label: "moire.publisher")
    ) throws {
        let reporter = BusEventLog(logger: logger)
        publisher = try ResultPublisher(endpoint: endpoint, limits: limits) { reporter.report($0) }
        self.publishRaw = publishRaw
        self.buses = buses
    }

    func handle(_ item: BusItem, bus: Int) -> Bool {
        switch item {
        case .frame(let h, let payload):
            if bus > 0 {
                try? publisher.publish(header: h, payload: payload.bytes); derived += 1
            } else if publishRaw {
                try? publisher.publish(header: h, payload: payload.bytes); forwarded += 1
            }
            return true
        case .run(_, let json):
            guard let ev = try? JSONDecoder().decode(RunEvent.self, from: json) else { return true }
            if bus == 0, ev.event == "start", let s = try? JSONDecoder().decode(RunStart.self, from: json) {
                try? publisher.publishStart(s)
            }
            if ev.event == "stop" {
                if bus == 0 { rawStop = try? JSONDecoder().decode(RunStop.self, from: json) }
                stops += 1
                if stops == buses {
                    if let s = rawStop { try? publisher.publishStop(s) }
                    return false
                }
            }
            return true
        }
    }
}

/// Logs the result bus's events, a subscriber falling behind at most once per `quietSeconds`.
// Sendable by hand: `lastBehind` guarded by `lock`.
final class BusEventLog: @unchecked Sendable {
    private let logger: Logger
    private let lock = NSLock()
    private var lastBehind = Date.distantPast
    private let quietSeconds = 5.0

    init(logger: Logger) { self.logger = logger }

    func report(_ event: ResultBusEvent) {
        switch event {
        case .subscriberQueueFull(let times):
            lock.lock()
            let due = Date().timeIntervalSince(lastBehind) >= quietSeconds
            if due { lastBehind = Date() }
            lock.unlock()
            if due {
                logger.warning(
                    "a result-bus subscriber is not keeping up: its queue is full, it misses messages until it has room (the others do not)",
                    metadata: ["overflows.so.far": "\(times)"])
            }
        case .subscriptionChurn(let perSecond):
            logger.warning(
                "result-bus subscriptions arrive at \(perSecond)/s or more; start replays are limited to one per 0.25 s"
            )
        }
    }
}
