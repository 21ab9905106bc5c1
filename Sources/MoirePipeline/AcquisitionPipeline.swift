import Foundation
import Logging
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
    /// The first recording error (the raw recording's, else a derived one's): the run stopped on it.
    public var recordingError: MoireError?
    public var publishEndpoint: String?
    /// Every stage's report keyed by stage name: `recorder`, `sim`, `sim.recorder`, `denoise`,
    /// `volume`, `volume.recorder`, `sim3d`, `sim3d.recorder`, `publisher` (those the run had).
    public var stages: [String: StageReport] = [:]

    /// Raw frames forwarded to the result bus.
    public var published: Int { stages["publisher"]?[counter: "raw.forwarded"] ?? 0 }
    /// Derived frames (sr, wf, den, vol, …) forwarded to the result bus.
    public var derivedPublished: Int { stages["publisher"]?[counter: "derived.forwarded"] ?? 0 }
    /// Live SIM counters (nil when the run had no SIM stage).
    public var sim: SIMStageCounters? { stages["sim"]?.details as? SIMStageCounters }
    public var srRecording: String? { stages["sim.recorder"]?.recording }
    /// Live denoising counters (nil without a denoise stage) and where its checkpoints went.
    public var denoise: DenoiseStageCounters? { stages["denoise"]?.details as? DenoiseStageCounters }
    public var denoiseCheckpoints: String? { stages["denoise"]?.files["checkpoints"] }
    /// Where live deconvolution's checkpoints went (with `denoise.deconvolve`).
    public var deconvolutionCheckpoints: String? { stages["denoise"]?.files["deconvolution.checkpoints"] }
    /// Live light-sheet counters (nil without a volume stage) and the volume recording.
    public var volumes: VolumeStageCounters? { stages["volume"]?.details as? VolumeStageCounters }
    public var volumeRecording: String? { stages["volume.recorder"]?.recording }
    /// Live 3D-SIM counters (nil without a 3D-SIM stage) and its SR volume recording.
    public var sim3d: SIM3DStageCounters? { stages["sim3d"]?.details as? SIM3DStageCounters }
    public var sim3dRecording: String? { stages["sim3d.recorder"]?.recording }
    /// The result bus's own counts: messages sent (lifecycle included), subscriber queue overflows, replays.
    public var bus: ResultPublisher.Counts? { stages["publisher"]?.details as? ResultPublisher.Counts }
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
        if proto.denoise.enabled { largest = max(largest, plane * 16) }
        limits.largestMessageBytes = largest + 4096
        // When the devices wait for every consumer (virtual time), subscribers are consumers too.
        if clock.backpressure == .block {
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
        let recording = try Self.recordingPath(p, options)
        resolvedRecordingPath = recording
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
        if p.mode == .sim3d, p.reconstruction.enabled { try SIM3DStage.check(p) }
        return try VolumeStage.measuredPSFs(for: p)
    }

    static func makeRunID() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "\(f.string(from: Date()))-\(UUID().uuidString.prefix(6).lowercased())"
    }

    /// Where this run records (nil: it does not).
    public var recordingPath: String? { resolvedRecordingPath }
    private let resolvedRecordingPath: String?

    /// The recording path of a run of `p` with `options`: the override (`--out`, a daemon
    /// request) or the protocol's, in the protocol's stated format (its suffix added when the path
    /// has none; the other format's suffix refused).
    public static func recordingPath(_ p: AcquisitionProtocol, _ options: PipelineOptions) throws -> String? {
        guard !options.noRecording else { return nil }
        guard let override = options.recordingPath else { return p.outputs.recording }
        return try p.outputs.recordingFormat?.recordingPath(override) ?? override
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
            protocolFile: proto.file, rigFile: proto.rig.file, startedNs: runStartedNs,
            instrument: Self.instrument(of: proto))
    }

    /// The rig's lasers, camera and each channel's SIM pattern geometry, for the recording's metadata.
    static func instrument(of p: AcquisitionProtocol) -> RecordingInstrument {
        let lasers = p.rig.lasers.map { device in
            RecordingInstrument.Laser(
                name: device.name, model: device.profile.model, wavelengthNm: device.profile.laser?.wavelengthNm ?? 0,
                maxPowerMw: device.profile.laser?.maxPowerMw ?? 0)
        }
        let camera = p.rig.cameraProfile
        let detector = RecordingInstrument.Detector(
            model: p.rig.camera.profile.model, gainADUPerE: camera.gainADUPerE, offsetADU: camera.offsetADU,
            readNoiseE: camera.readNoiseE, binning: p.binning)
        let patterns = p.channels.map { channel -> [RecordingInstrument.PatternAngle] in
            guard p.mode.needsPatterns, let name = channel.patternSet,
                let set = p.rig.modulator?.profile.modulator?.patternSet(named: name)
            else { return [] }
            return (0..<p.angles).compactMap { angle in
                let specs = (0..<p.phases).compactMap { set.pattern(angle: angle, phase: $0) }
                guard let first = specs.first, specs.count == p.phases else { return nil }
                return RecordingInstrument.PatternAngle(
                    kx: first.kx, ky: first.ky, phasesRad: specs.map(\.phaseRad), modulation: first.modulation)
            }
        }
        return RecordingInstrument(
            lasers: lasers,
            channelLaser: p.channels.map { channel in p.rig.lasers.firstIndex { $0.name == channel.laser } },
            channelPowerMw: p.channels.map(\.powerMw), detector: detector, patterns: patterns)
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
        let graph = PipelineGraph(raw: bus, backpressure: clock.backpressure, logger: logger)
        var recorders: [RecorderStage] = []
        /// Records `stream` of stage `source`'s output to `path` (a derived recording beside the raw one).
        func record(
            _ source: String, stream: String, to path: String, layout: @escaping (FrameHeader) -> RecordingLayout
        ) throws {
            let recorder = RecorderStage(
                name: "\(source).recorder", path: path, stream: stream, logger: logger, layout: layout)
            recorder.onError = { [runner] error in runner.fail(error) }
            recorders.append(recorder)
            try graph.add(recorder, reading: [.output(of: source)])
        }
        if let path = recordingPath {
            let recorder = try RecorderStage(path: path, layout: layout, logger: logger)
            recorder.onError = { [runner] error in runner.fail(error) }
            recorders.append(recorder)
            try graph.add(recorder, reading: [.raw])
        }
        let reconstructs = proto.reconstruction.enabled && !options.noReconstruction
        var sim: SIMStage?
        if proto.mode == .sim2d || proto.mode == .llssim, reconstructs {
            let stage = try SIMStage(
                protocol: proto, options: proto.reconstruction, recordingPath: recordingPath, logger: logger)
            sim = stage
            try graph.add(stage, reading: [.raw])
            if let path = stage.recordPath {
                stage.recorded = true
                try record(stage.name, stream: "sr", to: path, layout: stage.srLayout)
            }
        }
        var volume: VolumeStage?
        if proto.mode == .llsm, !options.noReconstruction {
            volume = try VolumeStage(
                protocol: proto, recordingPath: recordingPath, logger: logger, measuredPSF: measuredPSFs)
        } else if proto.mode == .llssim, proto.rig.lightSheet != nil, let sim {
            // LLS-SIM on a light-sheet rig: the SR planes of the SIM stage are stacked and deskewed.
            volume = try VolumeStage(protocol: proto, recordingPath: recordingPath, logger: logger, fromSR: true)
            sim.lossless = true
        }
        if let volume {
            try graph.add(volume, reading: [sim == nil ? .raw : .output(of: "sim")])
            if let path = volume.recordPath {
                volume.recorded = true
                try record(volume.name, stream: "vol", to: path, layout: volume.volumeLayout)
            }
        }
        if proto.mode == .sim3d, reconstructs {
            let stage = try SIM3DStage(
                protocol: proto, options: proto.reconstruction, recordingPath: recordingPath, logger: logger)
            try graph.add(stage, reading: [.raw])
            if let path = stage.recordPath {
                stage.recorded = true
                try record(stage.name, stream: "sr3d", to: path, layout: stage.volumeLayout)
            }
        }
        if proto.denoise.enabled, !options.noDenoise {
            // With live SIM, the SR frames are denoised (adapting on the phase sets by SR pairs); else the raw frames.
            let stage = try DenoiseStage(
                protocol: proto, options: proto.denoise, recordingPath: recordingPath, logger: logger,
                source: sim.map { .simSR($0) } ?? .raw)
            sim?.onSet = { [stage] set in
                stage.offer(set)
            }
            if proto.lightSheet.source == .denoised, sim == nil { volume?.denoiser = stage }
            try graph.add(stage, reading: [sim == nil ? .raw : .output(of: "sim")])
        }
        var publisher: PublisherStage?
        let endpoint = options.noPublish ? nil : (options.publishEndpoint ?? proto.outputs.publish)
        if let endpoint {
            let stage = try PublisherStage(
                endpoint: endpoint, publishRaw: proto.outputs.publishRaw, limits: busLimits, logger: logger)
            publisherLock.lock()
            activePublisher = stage.publisher
            publisherLock.unlock()
            onPublisherBound?(stage.publisher.endpoint)
            if options.waitForSubscribers > 0 {
                let deadline = Date().addingTimeInterval(Double(options.subscriberWaitMs) / 1000)
                while stage.publisher.subscriptions < options.waitForSubscribers && Date() < deadline {
                    stage.publisher.serviceSubscriptions()
                    usleep(5000)
                }
                logger.info("result-bus subscribers", metadata: ["count": "\(stage.publisher.subscriptions)"])
            }
            publisher = stage
            let inputs = graph.allBuses
            stage.inputCount = inputs.count
            try graph.add(stage, reading: inputs)
        }
        try graph.start()
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
        var result = runner.run(
            pool: pool,
            sink: { frame in
                let counter = frame.header.missing ? PipelineMetrics.rawMissing : PipelineMetrics.rawDelivered
                try bus.publish(frame)
                counter.increment()
            }, onProgress: onProgress)
        let stop = RunStop(
            run: runID, reason: result.reason, error: result.error?.description, frames: result.delivered,
            missing: result.missing, planned: result.planned, stoppedNs: unixTimeNs(),
            poolExhausted: result.poolExhausted)
        try bus.publishRun(Wire.encode(stop))
        graph.join()
        let reports = graph.reports()
        let recordingError = recorders.lazy.compactMap(\.error).first
        if let recordingError, result.reason == "completed" {
            // A derived recording failed after the last raw frame: the run did not make what it was asked for.
            result.reason = "fault"
            result.error = recordingError
        }
        PipelineMetrics.poolExhausted.increment(by: result.poolExhausted)
        PipelineMetrics.runs(reason: result.reason).increment()
        logger.info(
            "run ended",
            metadata: [
                "reason": "\(result.reason)", "frames": "\(result.delivered)",
                "missing": "\(result.missing)", "pool.exhausted": "\(result.poolExhausted)",
                "pool.waits": "\(result.poolWaits)",
            ])
        return PipelineResult(
            run: result, runID: runID, recording: recorders.first { $0.name == "recorder" }?.summary,
            recordingError: recordingError, publishEndpoint: publisher?.publisher.endpoint, stages: reports)
    }
}
