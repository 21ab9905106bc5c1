import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireStorage
import MoireTransport

/// Records one stream of a bus to an OME-TIFF: the raw frames (the run's recording, planes at
/// their planned index) or a stage's derived frames (SR frames, volumes plane by plane, in the
/// order they come; the layout made from the first frame). Recording has priority: a write error
/// stops the run safely with its message (`onError`), and the recorder never skips a frame it reads.
// Sendable by hand: the writer is used only by the recorder's reader thread; results are read after join().
final class RecorderStage: PipelineStage, @unchecked Sendable {
    /// Where plane indices come from.
    enum Numbering {
        /// The header's `index` (the raw stream: the plan's order).
        case asPlanned
        /// The order written (derived streams).
        case asWritten
    }

    let name: String
    let path: String
    private let stream: String
    private let numbering: Numbering
    private let makeLayout: (FrameHeader) -> RecordingLayout
    /// Derived recordings need no index once complete; the raw one keeps it (recovery, verification).
    private let keepsIndex: Bool
    private let logger: Logger
    private var writer: (any RecordingWriter)?
    /// OME-TIFF or OME-Zarr, by the path's suffix.
    private let format: RecordingFormat
    private var finished = false
    private(set) var summary: RecordingSummary?
    private(set) var error: MoireError?
    var onError: (MoireError) -> Void = { _ in }

    /// The raw recording: its layout is known before the first frame, so the file is made now.
    init(name: String = "recorder", path: String, layout: RecordingLayout, logger: Logger) throws {
        self.name = name
        self.path = path
        stream = "raw"
        numbering = .asPlanned
        makeLayout = { _ in layout }
        keepsIndex = true
        self.logger = logger
        format = RecordingFormat(path: path)
        writer = try format.makeWriter(path: path, layout: layout, logger: logger)
    }

    /// A derived stream's recording, made when its first frame comes.
    init(
        name: String, path: String, stream: String, logger: Logger,
        layout: @escaping (FrameHeader) -> RecordingLayout
    ) {
        self.name = name
        self.path = path
        self.stream = stream
        numbering = .asWritten
        makeLayout = layout
        keepsIndex = false
        self.logger = logger
        format = RecordingFormat(path: path)
    }

    var report: StageReport {
        StageReport(
            counters: [StageCounter(name: "planes", value: summary?.planes ?? writer?.planesWritten ?? 0)],
            recording: summary == nil && writer == nil ? nil : path)
    }

    func receive(_ item: BusItem, fromInput input: Int) -> Bool {
        switch item {
        case .frame(let header, let payload):
            guard header.stream == stream, error == nil, !finished else { return true }
            do {
                try payload.withUnsafeBytes { try write(header, $0) }
            } catch {
                // Recording has priority: any failure stops the run safely, with its message.
                let failure = storageError(error)
                self.error = failure
                logger.error("recording failed", metadata: ["recording": "\(path)", "error": "\(failure)"])
                onError(failure)
            }
            return true
        case .run(.start, _):
            return true
        case .run(.stop, _):
            finish()
            return false
        }
    }

    /// Writes one frame (a missing one too: the writer records it as such); a volume (a header
    /// with `depth`) plane by plane.
    private func write(_ header: FrameHeader, _ payload: UnsafeRawBufferPointer) throws {
        if writer == nil { writer = try format.makeWriter(path: path, layout: makeLayout(header), logger: logger) }
        guard let writer else { return }
        guard let depth = header.depth, !header.missing, payload.count == header.byteCount else {
            var plane = header
            if numbering == .asWritten { plane.index = writer.planesWritten }
            try writer.write(header: plane, payload: payload)
            return
        }
        let planeBytes = header.byteCount / depth
        for z in 0..<depth {
            var plane = header
            plane.depth = nil
            plane.z = z
            if numbering == .asWritten { plane.index = writer.planesWritten }
            let bytes = UnsafeRawBufferPointer(rebasing: payload[(z * planeBytes)..<((z + 1) * planeBytes)])
            try writer.write(header: plane, payload: bytes)
        }
    }

    /// Any error of the writer as a `MoireError` naming the recording.
    private func storageError(_ error: Error) -> MoireError {
        (error as? MoireError) ?? MoireError(.storage, "\(error)", place: path)
    }

    func finish() {
        finished = true
        guard let w = writer else { return }
        writer = nil
        do {
            summary = try w.finish()
            if !keepsIndex, format == .omeTiff {
                try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: path))
            }
        } catch {
            let failure = storageError(error)
            logger.error("closing the recording failed", metadata: ["error": "\(failure)"])
            if self.error == nil { self.error = failure }
        }
    }
}

/// Forwards frames and lifecycle messages to the result bus (PUB): raw frames from input 0 (the
/// raw bus, when asked), derived frames (sr, wf, …) from the others (every stage's output). The
/// run's `stop` goes out last, once every input has stopped.
// Sendable by hand: used by its reader thread only; counts read after join().
final class PublisherStage: PipelineStage, @unchecked Sendable {
    let name = "publisher"
    let publisher: ResultPublisher
    let publishRaw: Bool
    /// The buses it reads (set when it is added to the graph: the raw bus and every stage output).
    var inputCount = 1
    private(set) var forwarded = 0
    private(set) var derived = 0
    private var stops = 0
    private var rawStop: RunStop?

    init(
        endpoint: String, publishRaw: Bool, limits: ResultBusLimits = ResultBusLimits(),
        logger: Logger = Logger(label: "moire.publisher")
    ) throws {
        let reporter = BusEventLog(logger: logger)
        publisher = try ResultPublisher(endpoint: endpoint, limits: limits) { reporter.report($0) }
        self.publishRaw = publishRaw
    }

    var report: StageReport {
        let counts = publisher.counts
        return StageReport(
            counters: [
                StageCounter(name: "raw.forwarded", value: forwarded),
                StageCounter(name: "derived.forwarded", value: derived),
                StageCounter(name: "sent", value: counts.sent),
                StageCounter(name: "subscriptions", value: counts.subscriptions),
                StageCounter(name: "start.replays", value: counts.startReplays),
                StageCounter(name: "subscriber.queue.full", value: counts.subscriberQueueFull),
            ], details: counts)
    }

    func receive(_ item: BusItem, fromInput input: Int) -> Bool {
        switch item {
        case .frame(let header, let payload):
            if input > 0 {
                try? payload.withUnsafeBytes { try publisher.publish(header: header, payload: $0) }
                derived += 1
            } else if publishRaw {
                try? payload.withUnsafeBytes { try publisher.publish(header: header, payload: $0) }
                forwarded += 1
            }
            return true
        case .run(.start(let start), _):
            if input == 0 { try? publisher.publishStart(start) }
            return true
        case .run(.stop(let stop), _):
            if input == 0 { rawStop = stop }
            stops += 1
            guard stops == inputCount else { return true }
            if let rawStop { try? publisher.publishStop(rawStop) }
            return false
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

extension AcquisitionProtocol {
    /// The layout of a derived recording (SR frames, volumes) beside this protocol's raw one,
    /// from its first frame: a volume's depth and voxel depth (`params.voxelZUm`) come from its
    /// header; 2D frames keep the protocol's z planes and step.
    func derivedLayout(first: FrameHeader, name: String, mode: String) -> RecordingLayout {
        let zPlanes = first.depth ?? self.zPlanes
        let zStep = first.depth == nil ? zStepUm : first.params?["voxelZUm"].flatMap(Double.init) ?? abs(zStepUm)
        return RecordingLayout(
            run: first.run, name: name, mode: mode, channels: channels.map(\.name), excitationNm: [],
            emissionNm: channels.map(\.emissionNm), timepoints: timepoints, zPlanes: zPlanes, angles: 1, phases: 1,
            width: first.width, height: first.height, pixel: .float32, pixelSizeUm: first.pixelSizeUm, zStepUm: zStep,
            objectiveNA: rig.optics.objectiveNA, magnification: rig.optics.magnification, protocolFile: file,
            rigFile: rig.file)
    }
}
