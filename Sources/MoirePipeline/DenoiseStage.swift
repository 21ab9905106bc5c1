import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireDenoise
import MoireReconstruction
import MoireStorage
import MoireTransport

extension LiveDenoiseSpec {
    /// The network input for raw frames (SR frames never use temporal context).
    public func input(sim: Bool) -> UNet.Input {
        if sim { return .frame }
        switch context {
        case .history: return .frameAndHistory
        case .frameOnly: return .frame
        case nil: return pairs == .oddEven ? .frame : .frameAndHistory
        }
    }

    /// The starting weights: by default the shipped model for camera frames, scratch for SR frames
    /// (the shipped models never saw an SR frame's noise).
    public func resolvedStart(sim: Bool) -> OfflineDenoise.Start {
        switch weights {
        case .shipped: return .shipped
        case .scratch: return .scratch
        case .file(let path): return .file(path)
        case nil: return sim ? .scratch : .shipped
        }
    }

    var oddEvenPairs: Bool { pairs == .oddEven }

    /// The warm-up: adaptation steps before the first denoised frame. SR frames' network starts
    /// from scratch and is no denoiser yet: on the fidelity harness's 100-photon scenes its first
    /// frames were about 2 dB below the plain SR frame without it.
    public func resolvedFirstSteps(sim: Bool) -> Int {
        guard stepsPerFrame > 0 else { return 0 }
        return firstSteps ?? (sim ? Self.srFirstSteps : 0)
    }

    /// The default warm-up for SR frames.
    public static let srFirstSteps = 100
}

/// Counters of the live denoise stage.
public struct DenoiseStageCounters: Sendable, Equatable {
    public var denoised = 0
    /// Frames replaced by a newer one before inference took them.
    public var skipped = 0
    public var adaptationSteps = 0
    /// Times the adapted weights diverged and were reset to the starting ones.
    public var resets = 0
    public var checkpoints = 0
    /// Frames refused (not finite, blank).
    public var refused = 0
    /// Deconvolved frames published (`dcv`), with live deconvolution.
    public var deconvolved = 0
    /// The camera noise model denoising used (`NoiseModel.summary`), and where it came from: the
    /// camera profile, or measured from the run's first frames (`noise: auto`).
    public var noiseModel = ""
    public var noiseSource = ""
    /// With `denoise.workers`: frames whose network ran at each worker (`local`: in process, when
    /// none was connected), and frames that came back unusable.
    public var framesByWorker: [String: Int] = [:]
    public var workerFailures = 0
}

/// A network adapted on one thread and used for inference on another: the adapted weights are
/// copied (or moved by EMA) into the inference network as a new version, checkpointed every N
/// versions, and reset to the starting weights when adaptation diverges. The denoiser and the live
/// deconvolver are two of these.
// Sendable by hand: `inference` and `version` are used under the stage's weightsLock; `adaptation`
// and `recentLosses` only on the stage's adaptation thread.
final class AdaptedNetwork: @unchecked Sendable {
    let inference: Denoiser
    let adaptation: Denoiser
    /// Where checkpoints go (`vN.bin`), if anywhere.
    let checkpointDir: String?
    private let checkpointEvery: Int
    private let ema: Float
    private let initial: [[Float]]
    private var recentLosses: [Double] = []
    private(set) var version = 0
    /// The loss of the latest adaptation step (nil before the first).
    var lastLoss: Double? { recentLosses.last }

    init(inference: Denoiser, adaptation: Denoiser, checkpointDir: String?, checkpointEvery: Int, ema: Float) {
        self.inference = inference
        self.adaptation = adaptation
        self.checkpointDir = checkpointDir
        self.checkpointEvery = checkpointEvery
        self.ema = ema
        initial = adaptation.net.convs.flatMap { [$0.weights.values, $0.bias.values] }
    }

    /// Saves version 0 (the starting weights), so every frame can be reproduced. Returns whether it did.
    func saveStartingCheckpoint() -> Bool {
        guard checkpointEvery > 0, let dir = checkpointDir else { return false }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (try? WeightsFile.save(inference.net, weightsVersion: 0, to: "\(dir)/v0.bin")) != nil
    }

    /// Runs `steps` adaptation steps; false (and the adaptation network back at its starting weights)
    /// when a loss is not finite, jumps 20× above the recent median, or a step throws.
    func adapt(steps: Int, step: () throws -> Double) -> Bool {
        do {
            for _ in 0..<steps {
                let loss = try step()
                let median = recentLosses.sorted().dropFirst(recentLosses.count / 2).first ?? loss
                if !loss.isFinite || (recentLosses.count >= 10 && loss > 20 * median) {
                    reset()
                    return false
                }
                recentLosses.append(loss)
                if recentLosses.count > 50 { recentLosses.removeFirst() }
            }
            return true
        } catch {
            reset()
            return false
        }
    }

    /// Copies (or moves by EMA) the adapted weights into the inference network: a new version. Call
    /// under the stage's weightsLock. Returns whether a checkpoint was written.
    func swapIn() -> Bool {
        for (a, b) in zip(inference.net.convs, adaptation.net.convs) {
            for (ta, tb) in [(a.weights, b.weights), (a.bias, b.bias)] {
                for i in 0..<ta.count { ta[i] = ema * ta[i] + (1 - ema) * tb[i] }
            }
        }
        if let s = adaptation.scale { inference.scale = s }  // one normalisation for both networks
        version += 1
        guard checkpointEvery > 0, version % checkpointEvery == 0, let dir = checkpointDir else { return false }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (try? WeightsFile.save(inference.net, weightsVersion: version, to: "\(dir)/v\(version).bin")) != nil
    }

    private func reset() {
        var k = 0
        for c in adaptation.net.convs {
            for t in [c.weights, c.bias] {
                for i in 0..<t.count { t[i] = initial[k][i] }
                k += 1
            }
        }
        recentLosses.removeAll()
    }
}

/// Test-time-adapted denoising of every raw frame (or, for SIM, every SR frame): inference with the
/// current weights on one thread, self-supervised adaptation on the newest frame (for SIM: the
/// newest raw phase set, by `SIMDenoiser`'s SR pairs, the method measured better) on another; adapted weights are
/// swapped in under a lock and counted (`weightsVersion`), every `den.<channel>` header names the
/// version that made it, and checkpoints let any frame be reproduced offline. The receiving thread
/// only copies the frame, so the recorder never waits.
// Sendable by hand: mutable state guarded by `lock` (NSCondition), `weightsLock` (NSLock).
final class DenoiseStage: BackpressuredStage, @unchecked Sendable {
    let name = "denoise"
    /// This stage's latency metric (made once; the backend, when there is one, exists by now).
    private let latency = PipelineMetrics.latency(stage: "denoise")
    let bus: RawBus
    var output: RawBus? { bus }
    private let proto: AcquisitionProtocol
    private let options: LiveDenoiseSpec
    private let logger: Logger
    private let network: AdaptedNetwork
    private var inference: Denoiser { network.inference }
    private var adaptation: Denoiser { network.adaptation }
    /// With live deconvolution: the deconvolving network (raw frames, no temporal context).
    private let deconvolver: AdaptedNetwork?
    private let lock = NSCondition()
    private let weightsLock = NSLock()
    private var latest: (header: FrameHeader, pixels: [Float])?
    /// In virtual time: a frame waits for the inference thread to take the one before it instead of
    /// replacing it; the wait holds the reader and so, through the frame pool, the simulated camera
    /// (the clock contract: a simulated run skips no frame, whatever the load).
    var backpressure = Backpressure.drop
    private var adaptFrame: [Float]?
    /// For odd/even pairs: the frame before the newest one of the same channel and plane.
    private var adaptPartner: [Float]?
    private var previous: [String: [Float]] = [:]
    private var finished = false
    /// Adaptation steps before the first denoised frame, and whether they have been taken (under
    /// `lock`; inference waits for it).
    private let firstSteps: Int
    private var warmedUp: Bool
    /// Set when the inference thread has ended: the adaptation thread drains what it handed over first.
    private var inferenceEnded = false
    private(set) var counters = DenoiseStageCounters()
    private let done = DispatchGroup()
    private var runID = ""
    private var seq = 0
    var checkpointDir: String? { network.checkpointDir }
    /// The PSF of live deconvolution: a Gaussian of this σ (camera pixels), the widefield model.
    private var deconvolutionSigmaPx = 0.0
    /// Where the deconvolver's checkpoints go.
    var deconvolutionCheckpointDir: String? { deconvolver?.checkpointDir }
    private let pool: FramePool
    /// What is denoised: raw frames, or the SR frames of a live SIM stage (adapting on its phase sets).
    enum Source { case raw, simSR(SIMStage) }
    private let source: Source
    private var cameraModel: NoiseModel
    /// With `noise: auto`, false until the model has been measured: inference holds the first
    /// frames (`heldForNoise`) and adaptation waits.
    private var noiseSettled: Bool
    private var heldForNoise: [(header: FrameHeader, pixels: [Float])] = []
    /// A frame whose network runs at a worker, kept until its output comes back.
    private struct PendingFrame {
        var header: FrameHeader
        var version: Int
        var scale: Float?
    }
    /// With `denoise.workers` (raw frames): the network's inference runs in `moire worker`
    /// processes, at most 4 frames out at once; adaptation, context and normalisation stay here.
    private let work: OrderedWork<PendingFrame>?
    /// The inference weights last sent to workers, as a weights file (inference thread, under `weightsLock`).
    private var encodedWeights: (version: Int, bytes: Data)?
    /// `noise: auto` measures from this many frames of one channel and plane (frame differences) …
    static let framesForNoise = 4
    /// … or from what it holds when this many frames of any kind have come first.
    static let heldForNoiseAtMost = 16
    private var adaptSet: ReconstructedSet?
    /// For SIM: each reconstructed set by its SR frame's sequence number, until inference takes that
    /// frame (under `lock`). The network denoises the set reconstructed as its training pairs were
    /// (`SIMDenoiser.networkInput`), not the published SR frame, whose adaptive filter regularises
    /// more than the pairs' constant one: on the SIM denoising test's scene, 0.6–0.8 dB lower after
    /// 300 steps.
    private var setsForInference: [Int: ReconstructedSet] = [:]
    /// At most this many sets wait for inference: the SIM stage runs at most as far ahead as its
    /// SR frames' pool (4 slots) allows, plus the frame waiting here and the one being denoised;
    /// when inference skips SR frames (real time), their sets go with them.
    static let setsKeptForInference = 8
    /// The inference thread's reconstructors of the network's input, by channel.
    private var inputReconstructors: [Int: SIM2DReconstructor] = [:]
    private var simDenoisers: [Int: SIMDenoiser] = [:]
    /// Temporal context per channel and plane (the inference thread's), and the context the newest
    /// adaptation frame was denoised with.
    private var contexts: [String: TemporalContext] = [:]
    private var adaptContext: TemporalContext?
    /// The normalisation the context was made with (the adaptation network takes it on its first frame).
    private var adaptScale: Float?
    private var usesHistory: Bool { inference.usesTemporalContext }

    init(
        protocol p: AcquisitionProtocol, options: LiveDenoiseSpec, recordingPath: String?, logger: Logger,
        source: Source = .raw
    ) throws {
        proto = p; self.options = options; self.logger = logger; self.source = source
        bus = try RawBus()
        cameraModel = NoiseModel(camera: p.rig.cameraProfile)
        var sim = false
        if case .simSR = source { sim = true }
        if options.noise == .auto, sim {
            throw MoireError(
                .config, "denoise.noise: auto measures camera frames; SR frames adapt on their own pairs",
                place: p.file)
        }
        noiseSettled = options.noise == .camera
        firstSteps = options.resolvedFirstSteps(sim: sim)
        warmedUp = firstSteps == 0
        if firstSteps > 0, !sim, options.input(sim: false) == .frameAndHistory {
            throw MoireError(
                .config,
                "denoise.first_steps on raw frames needs context: none (with history, adaptation trains on what inference saw)",
                place: p.file)
        }
        counters.noiseModel = (sim ? SIMDenoiser.srModel : cameraModel).summary
        counters.noiseSource = sim ? "SR pairs" : "camera profile"
        let model = sim ? SIMDenoiser.srModel : cameraModel
        let engineA = try DNNLEngine()
        let engineB = try DNNLEngine()
        let input = options.input(sim: sim)
        let inference = Denoiser(engine: engineA, model: model, input: input, seed: 1)
        let adaptation = Denoiser(engine: engineB, model: model, input: input, seed: 1)
        switch options.resolvedStart(sim: sim) {
        case .shipped:
            guard !sim else {
                throw MoireError(
                    .config, "the shipped models denoise camera frames; SR frames start from scratch", place: p.file)
            }
            try ShippedModel.load(into: inference.net)
            try ShippedModel.load(into: adaptation.net)
        case .scratch:
            break
        case .file(let path):
            try WeightsFile.load(path, into: inference.net)
            try WeightsFile.load(path, into: adaptation.net)
        }
        let sides = sim ? 2 : 1
        adaptation.crop = min(options.crop, (min(p.roiWidth, p.roiHeight) * sides / 4) * 4)
        adaptation.batch = options.batch
        adaptation.learningRate = options.learningRate
        network = AdaptedNetwork(
            inference: inference, adaptation: adaptation,
            checkpointDir: recordingPath.map { RecordingIndex.stem(of: $0) + ".den-weights" },
            checkpointEvery: options.checkpointEvery, ema: options.ema)
        if options.workers != nil {
            guard !sim else {
                throw MoireError(
                    .config, "denoise.workers runs raw frames' inference; SR frames are denoised in process",
                    place: p.file)
            }
            guard !options.deconvolve else {
                throw MoireError(
                    .config, "denoise.workers cannot be combined with deconvolve (the deconvolver runs in process)",
                    place: p.file)
            }
        }
        work = try WorkBroker.forWorkers(options.workers, endpoint: options.workEndpoint).map {
            OrderedWork(broker: $0, limit: 4)
        }
        if options.deconvolve {
            deconvolutionSigmaPx = try Self.deconvolutionSigma(protocol: p, sim: sim)
            deconvolver = try Self.makeDeconvolver(
                protocol: p, options: options, model: model, sigmaPx: deconvolutionSigmaPx, recordingPath: recordingPath
            )
        } else {
            deconvolver = nil
        }
        pool = FramePool(slots: 4, bytes: p.roiWidth * p.roiHeight * 4 * sides * sides)
        guard p.roiWidth % 4 == 0, p.roiHeight % 4 == 0 else {
            throw MoireError(
                .config,
                "live denoising needs an ROI with sides divisible by 4; the protocol asks for \(p.roiWidth)×\(p.roiHeight)",
                place: p.file)
        }
    }

    /// The σ (camera pixels) of the widefield PSF model 0.21 λ/NA (Zhang et al. 2007) for live
    /// deconvolution: the rig's NA, the channels' one emission wavelength, the pixel at the sample.
    static func deconvolutionSigma(protocol p: AcquisitionProtocol, sim: Bool) throws -> Double {
        guard !sim else {
            throw MoireError(
                .config, "denoise.deconvolve works on raw frames; it cannot be used with live SIM", place: p.file)
        }
        guard let emission = p.channels.first?.emissionNm,
            p.channels.allSatisfy({ abs($0.emissionNm - emission) <= 1 })
        else {
            throw MoireError(
                .config, "denoise.deconvolve needs one emission wavelength for all channels (one PSF)", place: p.file)
        }
        return 0.21 * emission / 1000 / p.rig.optics.objectiveNA / p.pixelSizeUm
    }

    /// The deconvolving pair: one-channel input (the deconvolution term cannot use temporal context
    /// yet), from scratch, trained on recorrupted raw frames.
    private static func makeDeconvolver(
        protocol p: AcquisitionProtocol, options: LiveDenoiseSpec, model: NoiseModel, sigmaPx: Double,
        recordingPath: String?
    ) throws -> AdaptedNetwork {
        let loss = try DeconvolutionLoss.gaussian(sigmaPx: sigmaPx, hessianWeight: options.hessianWeight)
        let pair = [
            Denoiser(engine: try DNNLEngine(), model: model, input: .frame, seed: 2),
            Denoiser(engine: try DNNLEngine(), model: model, input: .frame, seed: 2),
        ]
        for d in pair { d.deconvolution = loss }
        pair[1].crop = min(options.crop, (min(p.roiWidth, p.roiHeight) / 4) * 4)
        pair[1].batch = options.batch
        pair[1].learningRate = options.learningRate
        return AdaptedNetwork(
            inference: pair[0], adaptation: pair[1],
            checkpointDir: recordingPath.map { RecordingIndex.stem(of: $0) + ".dcv-weights" },
            checkpointEvery: options.checkpointEvery, ema: options.ema)
    }

    func start() {
        // Version 0 (the starting weights) is a checkpoint too, so every frame can be reproduced.
        if network.saveStartingCheckpoint() { counters.checkpoints += 1 }
        if deconvolver?.saveStartingCheckpoint() == true { counters.checkpoints += 1 }
        work?.start(name: "moire.stage.denoise.collect", expectedWorkers: options.workers?.expectedCount) {
            [self] result, pending in collect(result, pending)
        }
        for name in ["infer", "adapt"] {
            done.enter()
            let t = Thread { [self] in
                if name == "infer" { infer() } else { adapt() }
                done.leave()
            }
            t.name = "moire.stage.denoise.\(name)"
            t.start()
        }
    }

    func join(timeoutSeconds: Double) -> Bool { done.wait(timeout: .now() + timeoutSeconds) == .success }

    deinit { work?.broker.stop() }

    var isSIM: Bool { if case .simSR = source { return true } else { return false } }

    /// Denoises a whole light-sheet stack with one weights version (the current inference weights,
    /// held for the whole stack): what the volume stage deconvolves with `light_sheet.source: denoised`.
    /// `scale`: the normalisation used (nil: each plane's own, before the first adaptation).
    func denoise(planes: [[Float]], width: Int, height: Int, skip: Set<Int>) throws -> (
        planes: [[Float]], version: Int, scale: Float?
    ) {
        weightsLock.lock()
        defer { weightsLock.unlock() }
        // With temporal context, the stack's planes are the sequence (neighbouring planes).
        inference.context = nil
        defer { inference.context = nil }
        let out = try planes.enumerated().map { z, p in
            skip.contains(z) ? p : try inference.denoise(p, width: width, height: height)
        }
        return (out, network.version, inference.scale)
    }

    /// For SIM: a reconstructed phase set, handed over before its SR frame is published: the newest
    /// one is adapted on, and inference denoises each SR frame's set.
    func offer(_ set: ReconstructedSet) {
        lock.lock()
        adaptSet = set
        setsForInference[set.srSeq] = set
        while setsForInference.count > Self.setsKeptForInference, let oldest = setsForInference.keys.min() {
            setsForInference[oldest] = nil
        }
        lock.broadcast()
        lock.unlock()
    }

    /// The set of SR frame `srSeq`; the sets of earlier SR frames are dropped (inference has passed them).
    private func takeSet(forSR srSeq: Int) -> ReconstructedSet? {
        lock.lock()
        defer { lock.unlock() }
        let set = setsForInference[srSeq]
        setsForInference = setsForInference.filter { $0.key > srSeq }
        return set
    }

    /// The network's input for an SR frame: its set reconstructed with the constant Wiener
    /// parameter the training pairs are reconstructed with.
    private func networkInput(of set: ReconstructedSet, from sim: SIMStage) throws -> [Float] {
        if inputReconstructors[set.channel] == nil {
            inputReconstructors[set.channel] = try sim.makeReconstructor(channel: set.channel)
        }
        return try SIMDenoiser.networkInput(
            set.frames, parameters: set.parameters, with: inputReconstructors[set.channel]!)
    }

    var report: StageReport {
        lock.lock()
        let c = counters
        lock.unlock()
        return StageReport(
            counters: [
                StageCounter(name: "denoised", value: c.denoised),
                StageCounter(name: "skipped", value: c.skipped),
                StageCounter(name: "adaptation.steps", value: c.adaptationSteps),
                StageCounter(name: "resets", value: c.resets),
                StageCounter(name: "checkpoints", value: c.checkpoints),
                StageCounter(name: "refused", value: c.refused),
                StageCounter(name: "deconvolved", value: c.deconvolved),
            ],
            files: [
                "checkpoints": network.checkpointDir, "deconvolution.checkpoints": deconvolver?.checkpointDir,
            ].compactMapValues { $0 }, details: c)
    }

    /// Receiver: copies the newest raw (or SR) frame (the recorder never waits for this stage).
    func receive(_ item: BusItem, fromInput input: Int) -> Bool {
        switch item {
        case .run(.start(let start), _):
            runID = start.run
            return true
        case .run(.stop, _):
            lock.lock()
            finished = true
            lock.broadcast()
            lock.unlock()
            return false
        case .frame(let h, let payload):
            guard h.stream == (isSIM ? "sr" : "raw"), !h.missing, payload.count == h.byteCount else { return true }
            let n = h.width * h.height
            let pixels: [Float]
            switch h.pixel {
            case .uint16:
                pixels = payload.withUnsafeBytes { bytes in
                    bytes.withMemoryRebound(to: UInt16.self) { b in (0..<n).map { Float(b[$0]) } }
                }
            case .float32:
                pixels = payload.withUnsafeBytes { bytes in
                    bytes.withMemoryRebound(to: Float.self) { b in Array(b[0..<n]) }
                }
            }
            lock.lock()
            if backpressure == .block {
                // A hang watchdog only: the inference thread takes every frame in turn.
                _ = lock.waitUnderHangWatchdog(while: { latest != nil })
            }
            if latest != nil { counters.skipped += 1 }
            latest = (h, pixels)
            if !isSIM && !usesHistory {
                // Time-lapse: the previous frame of the same plane; light-sheet stacks: the neighbouring plane.
                let key = sequenceKey(h)
                if options.oddEvenPairs {
                    // Only a frame with a predecessor of the same channel and plane can be trained on.
                    if let prev = previous[key] { adaptFrame = pixels; adaptPartner = prev }
                    previous[key] = pixels
                } else {
                    adaptFrame = pixels
                }
            }
            lock.broadcast()
            lock.unlock()
            return true
        }
    }

    /// Frames that follow one another: a time-lapse's frames of one channel and plane; in a
    /// light-sheet stack, the planes of one channel.
    private func sequenceKey(_ h: FrameHeader) -> String { proto.mode == .llsm ? "\(h.c)" : "\(h.c)/\(h.z)" }

    private func infer() {
        while true {
            lock.lock()
            while latest == nil && !finished { lock.wait() }
            guard let job = latest else { lock.unlock(); break }
            latest = nil
            lock.broadcast()
            lock.unlock()
            let (h, px) = job
            guard px.allSatisfy(\.isFinite), (px.max() ?? 0) > (px.min() ?? 0) else {
                lock.lock(); counters.refused += 1; lock.unlock(); continue
            }
            waitForWarmUp()
            if case .simSR(let sim) = source {
                denoiseSR(h, from: sim)
                continue
            }
            guard isNoiseSettled else {
                heldForNoise.append(job)
                let first = sequenceKey(heldForNoise[0].header)
                let sequence = heldForNoise.filter { sequenceKey($0.header) == first }
                if sequence.count >= Self.framesForNoise || heldForNoise.count >= Self.heldForNoiseAtMost {
                    settleNoise(from: sequence)
                }
                continue
            }
            denoiseAndPublish(h, px)
        }
        if !isNoiseSettled {
            // A run shorter than the frames the measurement wants: measure from what came.
            let first = heldForNoise.first.map { sequenceKey($0.header) }
            settleNoise(from: heldForNoise.filter { sequenceKey($0.header) == first })
        }
        if let work {
            // A hang watchdog: the frames out at workers come back before the stream's stop.
            let completedBy = work.finish(timeoutSeconds: 600, what: "denoised frames", logger: logger)
            lock.lock()
            counters.framesByWorker = completedBy
            lock.unlock()
        }
        lock.lock()
        inferenceEnded = true
        lock.broadcast()
        lock.unlock()
        let stop = RunStop(
            run: runID, reason: "completed", error: nil, frames: counters.denoised, missing: counters.skipped,
            planned: 0, stoppedNs: unixTimeNs())
        try? bus.publishRun(Wire.encode(stop))
    }

    /// Before the first denoised frame: until adaptation has taken the warm-up steps (or the run
    /// has ended without anything to adapt on).
    private func waitForWarmUp() {
        lock.lock()
        while !warmedUp && !finished { lock.wait() }
        lock.unlock()
    }

    /// Lets inference start (adaptation took the warm-up, or has nothing to take it on).
    private func markWarmedUp() {
        lock.lock()
        warmedUp = true
        lock.broadcast()
        lock.unlock()
    }

    private var isNoiseSettled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return noiseSettled
    }

    /// `noise: auto`: measures the camera's noise model from `frames` (frames of one channel and
    /// plane: from their differences; one frame: from itself), gives it to every network, writes
    /// it beside the checkpoints (a frame is reproduced from its weights and this model), lets
    /// adaptation start, and denoises the frames held meanwhile. When the measurement fails the
    /// camera profile's model stays, with a warning.
    private func settleNoise(from frames: [(header: FrameHeader, pixels: [Float])]) {
        var model = cameraModel
        var source = "camera profile (noise: auto could not measure: no frames)"
        if let first = frames.first {
            do {
                let estimate = try NoiseEstimation.estimate(
                    frames: frames.map(\.pixels), width: first.header.width, height: first.header.height)
                model = estimate.model
                source =
                    "measured from \(frames.count) frame(s) by \(estimate.method.rawValue) (\(estimate.blocks) blocks)"
                logger.info(
                    "camera noise measured from the run's first frames",
                    metadata: ["model": "\(model.summary)", "method": "\(estimate.method.rawValue)"])
            } catch {
                source = "camera profile (noise: auto could not measure: \(error))"
                logger.warning(
                    "noise: auto could not measure the camera's noise; the camera profile's model is used",
                    metadata: ["error": "\(error)"])
            }
        }
        cameraModel = model
        inference.model = model
        adaptation.model = model
        deconvolver?.inference.model = model
        deconvolver?.adaptation.model = model
        for directory in [network.checkpointDir, deconvolver?.checkpointDir].compactMap({ $0 }) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                try JSONEncoder().encode(model).write(
                    to: URL(fileURLWithPath: directory + "/" + Self.noiseModelFile), options: .atomic)
            } catch {
                logger.error(
                    "could not write the measured noise model beside the checkpoints",
                    metadata: ["directory": "\(directory)", "error": "\(error)"])
            }
        }
        let held = heldForNoise
        heldForNoise = []
        lock.lock()
        counters.noiseModel = model.summary
        counters.noiseSource = source
        noiseSettled = true
        lock.broadcast()
        lock.unlock()
        for frame in held { denoiseAndPublish(frame.header, frame.pixels) }
    }

    /// The file beside a run's checkpoints that holds the noise model `noise: auto` measured.
    static let noiseModelFile = "noise-model.json"

    /// For SIM: denoises SR frame `h`'s set (reconstructed as the training pairs are) with the
    /// current inference weights and publishes it; the header names the parameters the input was
    /// reconstructed with (JSON, full precision), so the frame is reproduced from the raw set.
    private func denoiseSR(_ h: FrameHeader, from sim: SIMStage) {
        guard let set = takeSet(forSR: h.seq) else {
            lock.lock(); counters.refused += 1; lock.unlock()
            logger.error("no phase set for an SR frame; its denoising skipped", metadata: ["sr": "\(h.seq)"])
            return
        }
        do {
            let input = try networkInput(of: set, from: sim)
            let parameters = String(decoding: try JSONEncoder().encode(set.parameters), as: UTF8.self)
            weightsLock.lock()
            let version = network.version
            let out: [Float]
            do {
                out = try inference.denoise(input, width: h.width, height: h.height)
            } catch {
                weightsLock.unlock()
                throw error
            }
            let scale = inference.scale
            weightsLock.unlock()
            try publishDenoised(
                out, from: h, version: version, scale: scale,
                input: ["input": "set", "inputWiener": String(SIMDenoiser.inputWiener), "inputParameters": parameters])
        } catch {
            logger.error("denoising an SR frame failed; frame skipped", metadata: ["error": "\(error)"])
        }
    }

    /// Denoises one frame with the current inference weights (and its context), publishes it, and
    /// deconvolves it when the protocol asks.
    private func denoiseAndPublish(_ h: FrameHeader, _ px: [Float]) {
        if let work {
            submit(h, px, to: work)
            return
        }
        let key = sequenceKey(h)
        weightsLock.lock()
        let version = network.version
        let contextBefore = contexts[key]
        inference.context = contextBefore
        let out: [Float]
        do {
            out = try inference.denoise(px, width: h.width, height: h.height)
        } catch {
            weightsLock.unlock()
            logger.error("denoising failed; frame skipped", metadata: ["error": "\(error)"])
            return
        }
        if usesHistory { contexts[key] = inference.context }
        let scale = inference.scale
        weightsLock.unlock()
        if usesHistory { handToAdaptation(px, context: contextBefore, scale: scale) }
        do {
            guard try publishDenoised(out, from: h, version: version, scale: scale) else { return }
            if let deconvolver { try deconvolve(h, px, with: deconvolver) }
        } catch {
            logger.error("publishing a denoised frame failed; frame skipped", metadata: ["error": "\(error)"])
        }
    }

    /// Prepares the network's input for `px` here (normalisation, temporal context) and hands it to
    /// a worker with the current inference weights; hands the frame to adaptation as in process.
    private func submit(_ h: FrameHeader, _ px: [Float], to work: OrderedWork<PendingFrame>) {
        let key = sequenceKey(h)
        weightsLock.lock()
        let version = network.version
        let contextBefore = contexts[key]
        inference.context = contextBefore
        let prepared: (input: [Float], scale: Float)
        let weights: Data
        do {
            prepared = try inference.networkInput(px, width: h.width, height: h.height)
            weights = try inferenceWeightsFile(version: version)
        } catch {
            weightsLock.unlock()
            logger.error("denoising failed; frame skipped", metadata: ["error": "\(error)"])
            return
        }
        if usesHistory { contexts[key] = inference.context }
        let scale = inference.scale
        weightsLock.unlock()
        if usesHistory { handToAdaptation(px, context: contextBefore, scale: scale) }
        do {
            let job = DenoiseJob(
                width: h.width, height: h.height, channels: inference.net.input.rawValue, weightsVersion: version)
            work.submit(
                parts: try job.item(weights: weights, input: prepared.input).parts,
                keeping: PendingFrame(header: h, version: version, scale: scale))
        } catch {
            logger.error("a frame could not be sent to a worker; skipped", metadata: ["error": "\(error)"])
        }
    }

    /// The inference weights of `version` as a weights file, encoded once per version (under
    /// `weightsLock`): the frames between two adaptation swaps send the same bytes.
    private func inferenceWeightsFile(version: Int) throws -> Data {
        if let encoded = encodedWeights, encoded.version == version { return encoded.bytes }
        let bytes = try inference.withInferenceWeights {
            try WeightsFile.encode(inference.net, weightsVersion: version)
        }
        encodedWeights = (version, bytes)
        return bytes
    }

    /// Hands a denoised raw frame and the context it was denoised with to the adaptation thread
    /// (temporal context: adaptation trains on what inference saw).
    private func handToAdaptation(_ px: [Float], context: TemporalContext?, scale: Float?) {
        lock.lock()
        adaptFrame = px
        adaptContext = context
        adaptScale = scale
        lock.broadcast()
        lock.unlock()
    }

    /// Publishes a denoised frame on `den` with its weights version and method, and counts it;
    /// false when no output slot came.
    @discardableResult
    private func publishDenoised(
        _ out: [Float], from h: FrameHeader, version: Int, scale: Float?, input: [String: String] = [:]
    ) throws -> Bool {
        let method = isSIM ? "sim-sr-pairs" : (options.oddEvenPairs ? "odd-even-raw" : "recorrupted-raw")
        let published = try publish(
            out, stream: "den", from: h, network: inference, version: version, scale: scale,
            params: ["method": method, "context": usesHistory ? "history" : "none", "noise": options.noise.rawValue]
                .merging(input) { _, given in given })
        guard published else { return false }
        lock.lock(); counters.denoised += 1; lock.unlock()
        PipelineMetrics.denoised.increment()
        PipelineMetrics.record(latency, sincePublishedNs: h.publishedNs)
        return true
    }

    /// A frame's network output back from a worker (in submission order): published in ADU.
    private func collect(_ result: WorkItem, _ pending: PendingFrame) {
        let h = pending.header
        do {
            let y = try DenoiseJob.output(of: result, width: h.width, height: h.height)
            let out = inference.output(of: y, scale: pending.scale ?? 1)
            try publishDenoised(out, from: h, version: pending.version, scale: pending.scale)
        } catch {
            lock.lock(); counters.workerFailures += 1; lock.unlock()
            logger.error(
                "a denoised frame came back from its worker unusable; skipped",
                metadata: ["frame": "\(h.seq)", "error": "\(error)"])
        }
    }

    /// Publishes the deconvolved frame of `px` (raw frame `h`) on the `dcv` stream, naming its weights version.
    private func deconvolve(_ h: FrameHeader, _ px: [Float], with deconvolver: AdaptedNetwork) throws {
        weightsLock.lock()
        let version = deconvolver.version
        let out: [Float]
        do {
            out = try deconvolver.inference.denoise(px, width: h.width, height: h.height)
        } catch {
            weightsLock.unlock()
            throw error
        }
        let scale = deconvolver.inference.scale
        weightsLock.unlock()
        let published = try publish(
            out, stream: "dcv", from: h, network: deconvolver.inference, version: version, scale: scale,
            params: [
                "method": "recorrupted-raw-deconvolution", "context": "none",
                "psfSigmaPx": String(format: "%.4f", deconvolutionSigmaPx), "hessian": String(options.hessianWeight),
            ])
        guard published else { return }
        lock.lock(); counters.deconvolved += 1; lock.unlock()
    }

    /// Publishes `out` (float32) as a frame of `stream` derived from raw frame `h`, its header naming
    /// the weights version, architecture, normalisation and `params`. False when no pool slot is free.
    private func publish(
        _ out: [Float], stream: String, from h: FrameHeader, network: Denoiser, version: Int, scale: Float?,
        params: [String: String]
    ) throws -> Bool {
        // In virtual time the frame waits for a slot as long as the readers take (up to the hang watchdog).
        let freeSlot = pool.acquire(for: backpressure)
        guard let slot = freeSlot else { return false }
        slot.withBytes { b in out.withUnsafeBytes { b.copyMemory(from: $0) } }
        var header = h
        header.stream = stream
        header.seq = seq
        header.pixel = .float32
        header.inputs = [h.seq]
        header.params = [
            "weightsVersion": String(version), "architecture": network.net.architecture,
            "scale": String(scale ?? 1), "offset": String(network.model.offset),
        ].merging(params) { _, given in given }
        seq += 1
        try bus.publish(Frame(header: header, slot: slot))
        return true
    }

    /// One adaptation step on the newest input: a raw frame, or (SIM) a raw phase set through SR pairs.
    private func step(
        frame: [Float]?, partner: [Float]?, set: ReconstructedSet?
    ) throws -> Double {
        if let set, case .simSR(let sim) = source {
            if simDenoisers[set.channel] == nil {
                simDenoisers[set.channel] = SIMDenoiser(
                    denoiser: adaptation, reconstructor: try sim.makeReconstructor(channel: set.channel),
                    parameters: set.parameters, model: cameraModel, method: .srPairs, seed: 1)
            }
            let sd = simDenoisers[set.channel]!
            sd.parameters = set.parameters
            return try sd.adapt(set: set.frames)
        }
        if let partner {
            return try adaptation.adapt(input: frame!, target: partner, width: proto.roiWidth, height: proto.roiHeight)
        }
        return try adaptation.adapt(frame!, width: proto.roiWidth, height: proto.roiHeight)
    }

    private func adapt() {
        while true {
            lock.lock()
            // Until the run has finished and inference has ended: inference hands over the last frame it took.
            // With `noise: auto` adaptation waits for the measured model (recorruption draws from it).
            while (adaptFrame == nil && adaptSet == nil || !noiseSettled) && !(finished && inferenceEnded) {
                lock.wait()
            }
            guard adaptFrame != nil || adaptSet != nil else { lock.unlock(); break }
            let frame = adaptFrame
            let set = adaptSet
            let partner = adaptPartner
            let context = adaptContext
            let scale = adaptScale
            adaptFrame = nil; adaptSet = nil; adaptPartner = nil; adaptContext = nil
            lock.unlock()
            adaptation.context = context
            if adaptation.scale == nil { adaptation.scale = scale }
            guard options.stepsPerFrame > 0, (frame ?? set!.frames.flatMap { $0 }).allSatisfy(\.isFinite) else {
                // Nothing to warm up on: inference does not wait for a warm-up that cannot come.
                markWarmedUp()
                continue
            }
            adapt(network, label: "denoiser") { try step(frame: frame, partner: partner, set: set) }
            if let deconvolver, let frame {
                let width = proto.roiWidth
                let height = proto.roiHeight
                adapt(deconvolver, label: "deconvolver") {
                    try deconvolver.adaptation.adapt(frame, width: width, height: height)
                }
            }
        }
    }

    /// `stepsPerFrame` steps of `network` (the first time, the warm-up's steps), then its new weights
    /// swapped in (or, when it diverged, a reset counted).
    private func adapt(_ network: AdaptedNetwork, label: String, step: () throws -> Double) {
        lock.lock()
        let steps = warmedUp ? options.stepsPerFrame : max(firstSteps, options.stepsPerFrame)
        lock.unlock()
        let adapted = network.adapt(steps: steps, step: step)
        lock.lock()
        counters.adaptationSteps += steps
        lock.unlock()
        // After the new weights are swapped in (or the reset counted): inference may start.
        defer { markWarmedUp() }
        guard adapted else {
            lock.lock(); counters.resets += 1; lock.unlock()
            logger.warning("\(label) adaptation diverged; reset to the starting weights")
            return
        }
        weightsLock.lock()
        let checkpointed = network.swapIn()
        let version = network.version
        weightsLock.unlock()
        if network === self.network {
            PipelineMetrics.denoiseWeightsVersion.record(version)
            if let loss = network.lastLoss { PipelineMetrics.denoiseLoss.record(loss) }
        }
        if checkpointed { lock.lock(); counters.checkpoints += 1; lock.unlock() }
    }
}
