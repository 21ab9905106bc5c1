import Foundation
import Logging
import Metrics
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoireReconstruction
import MoireSimulation
import MoireStorage
import MoireTransport

/// What a pipeline run produced.
public struct PipelineResult: Sendable {
    public var run: RunResult
    public var runID: String
    public var recording: RecordingSummary?
    public var recordingError: MoireError?
    public var publishEndpoint: String?
    public var published: Int
    /// Live SIM counters (nil when the run had no SIM stage).
    public var sim: SIMStageCounters?
    public var derivedPublished: Int = 0
    public var srRecording: String?
    /// Live denoising counters (nil without a denoise stage) and where its checkpoints went.
    public var denoise: DenoiseStageCounters?
    public var denoiseCheckpoints: String?
    /// Where live deconvolution's checkpoints went (with `denoise.deconvolve`).
    public var deconvolutionCheckpoints: String?
    /// Live light-sheet counters (nil without a volume stage) and the volume recording.
    public var volumes: VolumeStageCounters?
    public var volumeRecording: String?
    /// Live 3D-SIM counters (nil without a 3D-SIM stage) and its SR volume recording.
    public var sim3d: SIM3DStageCounters? = nil
    public var sim3dRecording: String? = nil
    /// The result bus's own counts: messages sent (lifecycle included), subscriber queue overflows, replays.
    public var bus: ResultPublisher.Counts? = nil
    /// Messages the result bus sent, lifecycle included (what `status` reports as `published`).
    public var busMessages: Int? { bus?.sent }
}

/// Options that override or extend the protocol for one run.
public struct PipelineOptions: Sendable {
    public var recordingPath: String?
    public var noRecording = false
    /// Replace an existing recording at the path (otherwise a run refuses to start).
    public var overwrite = false
    public var publishEndpoint: String?
    public var noPublish = false
    public var poolSlots = 64
    public var seed: UInt64 = 1
    /// Wait (up to `subscriberWaitMs`) for this many result-bus subscribers before the first frame.
    public var waitForSubscribers = 0
    public var subscriberWaitMs = 10_000
    /// Faults for a simulated camera to produce (ignored by other cameras).
    public var faults: [CameraFault] = []
    /// No live reconstruction even for SIM protocols.
    public var noReconstruction = false
    /// No live denoising even when the protocol asks for it.
    public var noDenoise = false
    /// Bytes the result bus may queue for one subscriber (nil: the protocol's `outputs.subscriber_buffer_mb`).
    public var subscriberBufferBytes: Int?
    public init() {}
}

/// The acquisition pipeline: runner → raw bus → {recorder, result publisher}.
///
/// The same graph runs embedded in `moire run`, inside `moired`, and in tests; only the
/// devices (simulated, replay, real) and the clock differ.
// Sendable by hand: set up before run(); in a run each stage guards its own state.
public final class AcquisitionPipeline: @unchecked Sendable {
    public let proto: AcquisitionProtocol
    public let devices: RigDevices
    public let runner: Runner
    public let options: PipelineOptions
    private let logger: Logger
    public let runID: String
    private let clock: MoireClock
    /// The rig's measured light-sheet PSFs by channel (checked at init).
    private let measuredPSFs: [Int: Volume]
    /// Called with the result bus's endpoint as bound (a `tcp://127.0.0.1:*` endpoint resolved to its
    /// port) before the run waits for subscribers: the moment a subscriber can connect.
    public var onPublisherBound: (@Sendable (String) -> Void)?
    private let publisherLock = NSLock()
    private var activePublisher: ResultPublisher?

    /// The result bus's counts so far in this run (any thread).
    public var busSoFar: ResultPublisher.Counts? {
        publisherLock.lock()
        defer { publisherLock.unlock() }
        return activePublisher?.counts
    }

    /// The result bus's limits for this run: the per-subscriber byte budget over the largest
    /// message the run's streams can carry.
    var busLimits: ResultBusLimits {
        var limits = ResultBusLimits()
        limits.bytesPerSubscriber = options.subscriberBufferBytes ?? proto.outputs.subscriberBufferBytes
        let plane = proto.roiWidth * proto.roiHeight
        var largest = plane * 2
        if proto.mode == .sim2d { largest = max(largest, plane * 16) }
        if proto.mode == .sim3d { largest = max(largest, proto.zPlanes * plane * 16) }
        if proto.mode == .llsm { largest = max(largest, proto.zPlanes * plane * 16) }
        if !proto.denoise.isEmpty { largest = max(largest, plane * 16) }
        limits.largestMessageBytes = largest + 4096
        // In virtual time the devices wait for every consumer; subscribers are consumers too.
        if clock is VirtualClock {
            limits.waitForRoomMs = 60_000
            limits.drainAtCloseMs = 60_000
        }
        return limits
    }

    public init(
        protocol p: AcquisitionProtocol, devices: RigDevices? = nil, options: PipelineOptions = PipelineOptions(),
        clock: MoireClock = RealClock(), logger: Logger = Logger(label: "moire.pipeline")
    ) throws {
        proto = p
        self.options = options
        self.logger = logger
        self.clock = clock
        // What can be refused without the hardware is, before any device is opened.
        let recording = options.noRecording ? nil : (options.recordingPath ?? p.outputs.recording)
        if let recording, !options.overwrite, FileManager.default.fileExists(atPath: recording) {
            throw MoireError(
                .usage, "a file already exists here; refusing to overwrite it (give --overwrite, or another --out)",
                place: recording)
        }
        measuredPSFs = options.noReconstruction ? [:] : try Self.preflight(p)
        let devs = try devices ?? DeviceFactory.make(rig: p.rig, clock: clock, seed: options.seed)
        self.devices = devs
        // Faults happen in the simulated camera, or in the sensor behind a driver's simulated peer
        // (a USB3 Vision camera: a lost exposure reaches the driver as a block-id gap).
        if !options.faults.isEmpty {
            guard let target = devs.faultInjection else {
                throw MoireError(
                    .usage, "faults can only be injected into a simulated camera; '\(devs.camera.name)' is real")
            }
            for f in options.faults { target.inject(f) }
        }
        runID = Self.makeRunID()
        runner = Runner(protocol: p, devices: devs, runID: runID, clock: clock, logger: logger)
    }

    /// The checks a run makes before it opens any device, beyond the protocol's own: the rig's
    /// measured light-sheet PSFs load and fit the volumes; live 3D-SIM can reconstruct the stacks.
    /// `moire validate` runs them too.
    /// Returns the measured PSFs by channel (the volume stage uses them).
    @discardableResult
    public static func preflight(_ p: AcquisitionProtocol) throws -> [Int: Volume] {
        if p.mode == .sim3d, try LiveSIMOptions(p.reconstruction, place: p.file).enabled { try SIM3DStage.check(p) }
        return try VolumeStage.measuredPSFs(for: p)
    }

    static func makeRunID() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "\(f.string(from: Date()))-\(UUID().uuidString.prefix(6).lowercased())"
    }

    public var recordingPath: String? {
        options.noRecording ? nil : (options.recordingPath ?? proto.outputs.recording)
    }

    /// When `run()` began (the recording's AcquisitionDate).
    private var runStartedNs: Int64?

    public var layout: RecordingLayout {
        RecordingLayout(
            run: runID, name: proto.name, mode: proto.mode.rawValue, channels: proto.channels.map(\.name),
            excitationNm: proto.channels.map { proto.rig.laser(named: $0.laser)?.profile.laser?.wavelengthNm ?? 0 },
            emissionNm: proto.channels.map(\.emissionNm), timepoints: proto.timepoints, zPlanes: proto.zPlanes,
            angles: proto.angles, phases: proto.phases, width: proto.roiWidth, height: proto.roiHeight,
            pixel: .uint16, pixelSizeUm: proto.pixelSizeUm, zStepUm: proto.zStepUm,
            objectiveNA: proto.rig.optics.objectiveNA, magnification: proto.rig.optics.magnification,
            protocolFile: proto.file, rigFile: proto.rig.file, startedNs: runStartedNs)
    }

    /// Runs the acquisition to its end; every device is safe when this returns.
    public func run(onProgress: @escaping (RunProgress) -> Void = { _ in }) throws -> PipelineResult {
        defer { devices.makeSafe() }
        runStartedNs = unixTimeNs()
        // The result bus closes (and its ipc file goes) when the run returns, not when the pipeline goes.
        defer {
            publisherLock.lock()
            activePublisher = nil
            publisherLock.unlock()
        }
        let pool = FramePool(slots: options.poolSlots, bytes: proto.roiWidth * proto.roiHeight * 2)
        let bus = try RawBus()
        var stages: [BusStage] = []
        var recorder: RecorderStage?
        if let path = recordingPath {
            let r = try RecorderStage(path: path, layout: layout, logger: logger)
            r.onError = { [runner] e in runner.fail(e) }
            recorder = r
            stages.append(try BusStage(name: "recorder", endpoint: bus.endpoint, handle: r.handle))
        }
        var sim: SIMStage?
        let live = try LiveSIMOptions(proto.reconstruction, place: proto.file)
        if proto.mode == .sim2d || proto.mode == .llssim, live.enabled, !options.noReconstruction {
            let s = try SIMStage(protocol: proto, options: live, recordingPath: recordingPath, logger: logger)
            sim = s
            stages.append(try BusStage(name: "sim", endpoint: bus.endpoint, handle: s.handle))
        }
        var vol: VolumeStage?
        if proto.mode == .llsm, !options.noReconstruction {
            let v = try VolumeStage(
                protocol: proto, recordingPath: recordingPath, logger: logger, measuredPSF: measuredPSFs)
            vol = v
            stages.append(try BusStage(name: "volume", endpoint: bus.endpoint, handle: v.handle))
        } else if proto.mode == .llssim, proto.rig.lightSheet != nil, let sim {
            // LLS-SIM on a light-sheet rig: the SR planes of the SIM stage are stacked and deskewed.
            let v = try VolumeStage(protocol: proto, recordingPath: recordingPath, logger: logger, fromSR: true)
            sim.lossless = true
            vol = v
            stages.append(try BusStage(name: "volume", endpoint: sim.bus.endpoint, handle: v.handle))
        }
        var sim3d: SIM3DStage?
        if proto.mode == .sim3d, live.enabled, !options.noReconstruction {
            let s = try SIM3DStage(protocol: proto, options: live, recordingPath: recordingPath, logger: logger)
            sim3d = s
            stages.append(try BusStage(name: "sim3d", endpoint: bus.endpoint, handle: s.handle))
        }
        var den: DenoiseStage?
        let denOptions = LiveDenoiseOptions(proto.denoise)
        if denOptions.enabled, !options.noDenoise {
            // With live SIM, the SR frames are denoised (adapting on the phase sets by SR pairs); else the raw frames.
            let d = try DenoiseStage(
                protocol: proto, options: denOptions, recordingPath: recordingPath, logger: logger,
                source: sim.map { .simSR($0) } ?? .raw)
            den = d
            sim?.onSet = { [d] c, frames, params in d.offer(channel: c, frames: frames, params: params) }
            if proto.lightSheet["source"] == "denoised", sim == nil { vol?.denoiser = d }
            stages.append(try BusStage(name: "denoise", endpoint: sim?.bus.endpoint ?? bus.endpoint, handle: d.handle))
        }
        var publisher: PublisherStage?
        let endpoint = options.noPublish ? nil : (options.publishEndpoint ?? proto.outputs.publish)
        let derivedBuses: [String] = [sim?.bus.endpoint, den?.bus.endpoint, vol?.bus.endpoint, sim3d?.bus.endpoint]
            .compactMap { $0 }
        if let endpoint {
            let p = try PublisherStage(
                endpoint: endpoint, publishRaw: proto.outputs.publishRaw, buses: 1 + derivedBuses.count,
                limits: busLimits, logger: logger)
            publisherLock.lock()
            activePublisher = p.publisher
            publisherLock.unlock()
            onPublisherBound?(p.publisher.endpoint)
            if options.waitForSubscribers > 0 {
                let deadline = Date().addingTimeInterval(Double(options.subscriberWaitMs) / 1000)
                while p.publisher.subscriptions < options.waitForSubscribers && Date() < deadline {
                    p.publisher.serviceSubscriptions()
                    usleep(5000)
                }
                logger.info("result-bus subscribers", metadata: ["count": "\(p.publisher.subscriptions)"])
            }
            publisher = p
            stages.append(
                try BusStage(
                    name: "publisher", endpoints: [bus.endpoint] + derivedBuses,
                    handle: { item, i in p.handle(item, bus: i) }))
        }
        for s in stages { s.start() }
        let onSIMBus = ((den != nil && sim != nil) ? 1 : 0) + ((vol != nil && sim != nil) ? 1 : 0)
        try bus.waitForSubscribers(stages.count - onSIMBus)
        if let sim {
            // Its derived bus must see the publisher (when there is one) and the SR denoiser before the worker publishes.
            let n = (publisher != nil ? 1 : 0) + onSIMBus
            if n > 0 { try sim.bus.waitForSubscribers(n) }
            sim.start()
        }
        if let den {
            if publisher != nil { try den.bus.waitForSubscribers(1) }
            den.start()
        }
        if let vol {
            if publisher != nil { try vol.bus.waitForSubscribers(1) }
            vol.start()
        }
        if let sim3d {
            if publisher != nil { try sim3d.bus.waitForSubscribers(1) }
            sim3d.start()
        }
        let start = RunStart(
            run: runID, protocolName: proto.name, protocolFile: proto.file, mode: proto.mode.rawValue,
            rig: proto.rig.name, objectiveNA: proto.rig.optics.objectiveNA,
            magnification: proto.rig.optics.magnification, channels: proto.channels,
            shape: [
                "t": proto.timepoints, "c": proto.channels.count, "z": proto.zPlanes, "angles": proto.angles,
                "phases": proto.phases, "width": proto.roiWidth, "height": proto.roiHeight,
            ],
            pixel: .uint16, pixelSizeUm: proto.pixelSizeUm, startedNs: unixTimeNs())
        try bus.publishRun(Wire.encode(start))
        logger.info(
            "run started",
            metadata: [
                "run": "\(runID)", "protocol": "\(proto.name)", "frames": "\(proto.totalFrames)",
                "sequenced": "\(runner.hardwareSequenced ? "hardware" : "software")",
            ])
        let result = runner.run(pool: pool, sink: { try bus.publish($0) }, onProgress: onProgress)
        let stop = RunStop(
            run: runID, reason: result.reason, error: result.error?.description, frames: result.delivered,
            missing: result.missing, planned: result.planned, stoppedNs: unixTimeNs(),
            poolExhausted: result.poolExhausted)
        try bus.publishRun(Wire.encode(stop))
        for s in stages where !s.join(timeoutSeconds: 120) {
            logger.error("stage did not finish", metadata: ["stage": "\(s.name)"])
        }
        if let sim, !sim.join(timeoutSeconds: 120) { logger.error("SIM worker did not finish") }
        if let den, !den.join(timeoutSeconds: 120) { logger.error("denoise stage did not finish") }
        if let vol, !vol.join(timeoutSeconds: 600) { logger.error("light-sheet stage did not finish") }
        if let sim3d, !sim3d.join(timeoutSeconds: 600) { logger.error("3D-SIM stage did not finish") }
        if let c = sim3d?.counters {
            logger.info(
                "live 3D-SIM",
                metadata: [
                    "stacks": "\(c.stacksComplete)", "volumes": "\(c.volumes)",
                    "skipped.behind": "\(c.skippedBehind)", "skipped.missing": "\(c.skippedMissing)",
                ])
        }
        if let c = vol?.counters {
            logger.info(
                "live light sheet",
                metadata: [
                    "stacks": "\(c.stacksComplete)", "volumes": "\(c.volumes)",
                    "skipped.behind": "\(c.skippedBehind)", "missing.planes": "\(c.missingPlanes)",
                ])
        }
        if let c = sim?.counters {
            logger.info(
                "live SIM",
                metadata: [
                    "sets": "\(c.setsComplete)", "reconstructed": "\(c.reconstructed)",
                    "skipped.behind": "\(c.skippedBehind)", "skipped.missing": "\(c.skippedMissing)",
                ])
        }
        if let c = publisher?.publisher.counts {
            logger.info(
                "result bus",
                metadata: [
                    "sent": "\(c.sent)", "subscriptions": "\(c.subscriptions)", "start.replays": "\(c.startReplays)",
                    "subscriber.queue.full": "\(c.subscriberQueueFull)",
                ])
        }
        Counter(label: "moire_raw_frames_total", dimensions: [("result", "delivered")]).increment(by: result.delivered)
        Counter(label: "moire_raw_frames_total", dimensions: [("result", "missing")]).increment(by: result.missing)
        logger.info(
            "run ended",
            metadata: [
                "reason": "\(result.reason)", "frames": "\(result.delivered)",
                "missing": "\(result.missing)", "pool.exhausted": "\(result.poolExhausted)",
                "pool.waits": "\(result.poolWaits)",
            ])
        return PipelineResult(
            run: result, runID: runID, recording: recorder?.summary, recordingError: recorder?.error,
            publishEndpoint: publisher?.publisher.endpoint, published: publisher?.forwarded ?? 0,
            sim: sim?.counters, derivedPublished: publisher?.derived ?? 0, srRecording: sim?.recordPath,
            denoise: den?.counters, denoiseCheckpoints: den?.checkpointDir,
            deconvolutionCheckpoints: den?.deconvolutionCheckpointDir, volumes: vol?.counters,
            volumeRecording: vol?.recordPath, sim3d: sim3d?.counters, sim3dRecording: sim3d?.recordPath,
            bus: publisher?.publisher.counts)
    }
}
