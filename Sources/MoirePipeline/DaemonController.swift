import Foundation
import Logging
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireTransport

/// The daemon's control plane: serves the control endpoint and runs one acquisition at a time.
///
/// Requests: `ping`, `status`, `start` (protocolFile, optional out), `stop`, `pause`, `resume`
/// (docs/wire-format.md). A bad protocol is answered with its file:line:column error; nothing
/// is touched. Only the senders `access` admits are served; recordings go under `dataRoot` only.
/// `moired` wraps this in a swift-service-lifecycle `Service`.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class DaemonController: @unchecked Sendable {
    public let server: ControlServer
    public var endpoint: String { server.endpoint }
    private let logger: Logger
    private let lock = NSLock()
    private var pipeline: AcquisitionPipeline?
    private var lastResult: PipelineResult?
    private var lastRun: String?
    private var lastError: String?
    /// Options applied to every run (tests use a virtual clock through `makePipeline`).
    public var makePipeline: (AcquisitionProtocol, PipelineOptions, Logger) throws -> AcquisitionPipeline = {
        try AcquisitionPipeline(protocol: $0, options: $1, logger: $2)
    }

    /// The directory every recording must be under (nil: anywhere the daemon's user may write).
    public let dataRoot: String?
    /// How long a protocol (and its rig and profiles) may take to read before `start` gives up.
    public var protocolReadTimeout: Double = 10

    public init(
        endpoint: String, access: ControlAccess = .localUser(), dataRoot: String? = nil,
        logger: Logger = Logger(label: "moired")
    ) throws {
        server = try ControlServer(endpoint: endpoint, access: access) { refusal in
            logger.warning("control request refused", metadata: ["who": "\(refusal)"])
        }
        self.dataRoot = try dataRoot.map(DaemonController.resolveRoot)
        self.logger = logger
    }

    /// Who this daemon is, as `ping` and `status` tell it.
    public var info: DaemonInfo { DaemonInfo.current(dataRoot: dataRoot) }

    private static func resolveRoot(_ path: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw MoireError(.config, "the data root is not a directory", place: path)
        }
        return URL(fileURLWithPath: path).resolvingSymlinksInPath().standardized.path
    }

    /// Throws unless `recording` (its directory's real path, links resolved) is under the data root.
    func checkUnderDataRoot(_ recording: String) throws {
        guard let dataRoot else { return }
        let url = URL(fileURLWithPath: recording).standardized
        let directory = url.deletingLastPathComponent().resolvingSymlinksInPath().standardized.path
        let real = directory + "/" + url.lastPathComponent
        guard real.hasPrefix(dataRoot.hasSuffix("/") ? dataRoot : dataRoot + "/") else {
            throw MoireError(
                .permission, "outside the daemon's data root \(dataRoot); recordings go under it only",
                place: recording)
        }
    }

    /// Starts serving requests on a thread of its own.
    public func start() {
        let t = Thread { [self] in server.serve { self.handle($0) } }
        t.name = "moired.control"
        t.start()
    }

    /// Stops serving, aborts any run (devices safe) and waits up to `timeout` for its recording to close.
    public func shutdown(timeout: Double = 10) {
        current?.runner.abort()
        current?.devices.makeSafe()
        server.stop()
        let deadline = Date().addingTimeInterval(timeout)
        while current != nil && Date() < deadline { usleep(20_000) }
    }

    /// The run in progress, if any.
    public var current: AcquisitionPipeline? { lock.lock(); defer { lock.unlock() }; return pipeline }

    public func handle(_ req: ControlRequest) -> ControlReply {
        switch req.cmd {
        case "ping": return ControlReply(ok: true, state: status().state, daemon: info)
        case "status": return status()
        case "stop", "pause", "resume":
            guard let p = current else { return ControlReply(ok: false, error: "no run in progress", state: "idle") }
            switch req.cmd {
            case "stop": p.runner.requestStop()
            case "pause": p.runner.pause()
            default: p.runner.resume()
            }
            return ControlReply(ok: true, state: p.runner.state.rawValue, run: p.runID)
        case "start": return start(req)
        default:
            return ControlReply(
                ok: false, error: "unknown command '\(req.cmd)'; expected start, stop, pause, resume, status or ping")
        }
    }

    private func status() -> ControlReply {
        lock.lock(); defer { lock.unlock() }
        if let p = pipeline {
            let pr = p.runner.currentProgress
            let bus = p.busSoFar
            // The runner is idle before it arms and after its last frame; until the pipeline has
            // closed its stages, recording and result bus, the run is not over: a start would be refused.
            var state = pr.state.rawValue
            if pr.state == .idle { state = pr.done + pr.missing > 0 ? "finishing" : "arming" }
            return ControlReply(
                ok: true, state: state, run: p.runID, frames: pr.done, missing: pr.missing, planned: pr.planned,
                recording: p.recordingPath, publish: p.proto.outputs.publish, published: bus?.sent,
                lastSeq: bus?.lastSequence, daemon: info)
        }
        if let r = lastResult, r.runID == lastRun {
            return ControlReply(
                ok: true, error: r.run.error?.description ?? r.recordingError?.description,
                state: r.run.reason == "fault" ? "faulted" : "idle", run: r.runID,
                frames: r.run.delivered + r.run.missing, missing: r.run.missing, planned: r.run.planned,
                recording: r.recording?.path, publish: r.publishEndpoint, published: r.busMessages,
                lastSeq: r.bus?.lastSequence, daemon: info)
        }
        return ControlReply(
            ok: true, error: lastError, state: lastError == nil ? "idle" : "faulted", run: lastRun, daemon: info)
    }

    private func start(_ req: ControlRequest) -> ControlReply {
        lock.lock(); defer { lock.unlock() }
        if let p = pipeline {
            return ControlReply(
                ok: false, error: "run \(p.runID) is in progress", state: p.runner.state.rawValue, run: p.runID)
        }
        guard let file = req.protocolFile else { return ControlReply(ok: false, error: "start needs protocolFile") }
        do {
            let proto = try loadProtocol(file, rig: req.rig)
            if let recording = req.out ?? proto.outputs.recording { try checkUnderDataRoot(recording) }
            var o = PipelineOptions()
            o.recordingPath = req.out
            o.overwrite = req.overwrite ?? false
            let p = try makePipeline(proto, o, logger)
            pipeline = p
            lastRun = p.runID
            lastError = nil
            let t = Thread { [self] in
                var result: PipelineResult?
                var err: String?
                do { result = try p.run() } catch { err = "\(error)" }
                lock.lock(); pipeline = nil; lastResult = result; lastError = err; lock.unlock()
            }
            t.name = "moired.run"
            t.start()
            return ControlReply(
                ok: true, state: "arming", run: p.runID, planned: proto.totalFrames, recording: p.recordingPath,
                publish: proto.outputs.publish)
        } catch {
            return ControlReply(ok: false, error: "\(error)")
        }
    }

    /// Reads the protocol on a thread of its own, so that a file on a hung filesystem cannot hold
    /// the control socket: past `protocolReadTimeout` the start is refused and the daemon serves on.
    private func loadProtocol(_ file: String, rig: String?) throws -> AcquisitionProtocol {
        let outcome = LoadOutcome()
        let loaded = DispatchSemaphore(value: 0)
        let t = Thread {
            outcome.set(Result { try AcquisitionProtocol.load(file: file, rigFile: rig) })
            loaded.signal()
        }
        t.name = "moired.load"
        t.start()
        guard loaded.wait(timeout: .now() + protocolReadTimeout) == .success, let result = outcome.get() else {
            throw MoireError(
                .io,
                "reading the protocol took longer than \(Int(protocolReadTimeout)) s (a hung filesystem?); not started",
                place: file)
        }
        return try result.get()
    }
}

/// A protocol load handed from its reading thread to the control thread.
// Sendable by hand: `value` guarded by `lock`.
private final class LoadOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<AcquisitionProtocol, Error>?
    func set(_ result: Result<AcquisitionProtocol, Error>) { lock.lock(); value = result; lock.unlock() }
    func get() -> Result<AcquisitionProtocol, Error>? { lock.lock(); defer { lock.unlock() }; return value }
}
