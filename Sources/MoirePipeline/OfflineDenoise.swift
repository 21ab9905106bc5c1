import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireDenoise
import MoireStorage

/// Offline denoising (`moire denoise`): self-supervised adaptation on each frame, then inference.
public struct OfflineDenoise {
    public enum Noise: Sendable { case auto, fixed(NoiseModel), fromFile }
    public var noise = Noise.fromFile
    /// Where the weights start: the shipped model, random (He) initialisation, or a weights file.
    public enum Start: Sendable, Equatable {
        case shipped
        case scratch
        case file(String)
    }
    /// nil: the shipped model when the network has temporal context (what it was trained for), else scratch.
    public var start: Start?
    public var saveWeights: String?
    /// Adaptation steps on each frame before it is denoised.
    public var adaptSteps = 5
    /// Adaptation steps on the first frame; nil: the warm-up of `AdaptationSchedule`.
    public var firstSteps: Int?
    /// Crop side (clamped to the frame) and crops per step; whole-frame crops train best here.
    public var crop = 128
    public var batch = 1
    /// nil: 5e-4 from the shipped model (a gentler rate keeps what it learnt), 1e-3 otherwise.
    public var learningRate: Float?
    /// Each frame's output averaged over its eight rotations and reflections (`Denoiser.selfEnsemble`);
    /// nil: a single plane only. A lone frame, adapted briefly, gains 0.35–0.65 dB on the fidelity
    /// harness's simulated scenes at 5, 20 and 100 photons and 0.13 dB on the FMD fields; a stack's
    /// network, adapted frame after frame, fits the frames' orientation, and the ensemble cost up to
    /// 4.6 dB there (docs/denoising.md).
    public var selfEnsemble: Bool?
    /// Weight averaging for inference (see `Denoiser.averaging`).
    public var averaging: Float = 0.99
    public var seed: UInt64 = 1

    /// Training pairs: recorrupted from the noise model; odd/even planes (time-lapse frames or stack
    /// planes, each trained against its neighbour); or Neighbor2Neighbor sub-sampled pairs.
    public enum Pairs: String, Sendable, CaseIterable { case recorrupt, oddEven = "odd-even", neighbour }
    public var pairs = Pairs.recorrupt
    /// The deconvolution term (ZS-DeconvNet): the PSF as a Gaussian of this σ in pixels, or (`psfSigmaPx`
    /// nil) the widefield model from the recording's NA, emission and pixel size.
    public var deconvolve = false
    public var psfSigmaPx: Double?
    public var hessianWeight: Float = 0.0005
    /// What the network sees besides the frame: a running average of the earlier frames
    /// (temporal context, `TemporalContext`) or
    /// nothing. nil: temporal context wherever it can train (recorrupted pairs, no deconvolution term).
    public var input: UNet.Input?
    /// Only this part of the frames (batch reprocessing). Denoising adapts across a run, so a part
    /// cannot start where a whole run was at its first frame: it starts as a fresh run would,
    /// `partWarmUpFrames` frames before its slice (adapting on them and building its temporal
    /// context from them, writing none), and writes its own frames. The parts together hold
    /// every frame once, each denoised with the warm-up a whole run gives its first frames.
    public var part: BatchPart?
    public var partWarmUpFrames = 16

    public init() {}

    /// The network input this job uses.
    public var resolvedInput: UNet.Input {
        input ?? (pairs == .recorrupt && !deconvolve ? .frameAndHistory : .frame)
    }

    /// The network input for a stack of `planes` planes: a single plane has no history for temporal
    /// context to draw on, so unless the context or a weights file was chosen it gets the single-frame
    /// network (FMD test set, frame 4 alone: 34.53 dB on average against 34.38 with the temporal one).
    public func resolvedInput(planes: Int) -> UNet.Input {
        let chosenByTheUser: Bool
        if case .file = resolvedStart { chosenByTheUser = true } else { chosenByTheUser = input != nil }
        return planes == 1 && !chosenByTheUser ? .frame : resolvedInput
    }

    /// The starting weights this job uses.
    /// The shipped model for the network's input, unless the job deconvolves (the shipped models denoise).
    public var resolvedStart: Start { start ?? (deconvolve ? .scratch : .shipped) }

    /// Refuses combinations that cannot train: temporal context needs recorrupted pairs (a neighbouring
    /// frame as the target would share its noise with the context); the shipped models denoise, they do not deconvolve.
    public func validate() throws {
        let input = resolvedInput
        guard input == .frame || pairs == .recorrupt else {
            throw MoireError(
                .usage,
                "temporal context trains on recorrupted pairs; use --context none with --pairs \(pairs.rawValue)")
        }
        guard input == .frame || !deconvolve else {
            throw MoireError(.usage, "temporal context and --deconvolve cannot be combined yet; use --context none")
        }
        guard resolvedStart != .shipped || !deconvolve else {
            throw MoireError(.usage, "the shipped models denoise; --deconvolve starts from scratch or a weights file")
        }
        guard part == nil || saveWeights == nil else {
            throw MoireError(
                .usage, "a part's weights are not the run's; leave --save-weights out of a part", place: "--part")
        }
    }

    public var resolvedLearningRate: Float { learningRate ?? (resolvedStart == .shipped ? 5e-4 : 1e-3) }

    /// Loads the starting weights into `net`.
    public func loadStart(into net: UNet) throws {
        switch resolvedStart {
        case .shipped: try ShippedModel.load(into: net)
        case .scratch: break
        case .file(let path): try WeightsFile.load(path, into: net)
        }
    }

    /// How many adaptation steps each frame gets.
    ///
    /// Given numbers (`--first-steps`, `--adapt-steps`) are used as they are. By default the first
    /// frames adapt longer: frame t (from 0) gets max(adaptSteps, warmUp / (t + 1)) steps. Real
    /// cameras are unlike the simulated data the shipped model learnt from (correlated noise, other
    /// gains and specimens), and the network meets two regimes in turn: the first frame without history,
    /// then frames whose temporal context holds a few earlier frames; a long first frame followed at
    /// once by a few steps per frame teaches it the first regime and leaves it little time for the
    /// second (measured on the FMD widefield stacks: 30.8 dB at frame 4 with 200 steps then 5, 34.1 dB with
    /// the warm-up).
    public struct AdaptationSchedule: Sendable, Equatable {
        public var warmUp: Int
        public var adaptSteps: Int
        public var fixedFirst: Int?

        /// Steps for frame `t` (counted from 0).
        public func steps(frame t: Int) -> Int {
            if let fixedFirst { return t == 0 ? fixedFirst : adaptSteps }
            return max(adaptSteps, warmUp / (t + 1))
        }
    }

    /// This job's schedule for a run that denoises `frames` frames: the warm-up is 200 steps from
    /// the shipped model (which has learnt most of its work) and 300 from scratch. From the shipped
    /// model a short run gets 50 steps per frame it has, at most 200: with few frames after it, the
    /// long warm-up only fits those frames' noise. The harness's 20-photon scenes, each last frame
    /// alone, static / moving: frozen 31.00 / 30.64 dB, 25 steps 31.63 / 30.77, 50 steps 31.59 /
    /// 30.64, 100 steps 31.14 / 30.11, 200 steps 29.18 / 28.22 (BM3D 29.94 / 29.53); two-frame runs,
    /// the second frame: 200 then 100 steps 30.69 / 30.97, 100 then 50 steps 30.96 / 31.33. The FMD
    /// fields' frame 4 alone (512², each step sees a sixteenth of it): frozen 32.59, 25 steps 34.47,
    /// 50 steps 34.49, 200 steps 34.53.
    public func schedule(frames: Int) -> AdaptationSchedule {
        let warmUp =
            resolvedStart == .shipped ? min(200, Self.warmUpStepsPerFrame * max(1, frames)) : 300
        return AdaptationSchedule(warmUp: warmUp, adaptSteps: adaptSteps, fixedFirst: firstSteps)
    }

    /// Warm-up steps per frame of a short run from the shipped model (see `schedule(frames:)`).
    public static let warmUpStepsPerFrame = 50

    public struct Result: Sendable {
        public var frames: [[Float]]
        public var width: Int, height: Int
        public var pixelUm: Double?
        public var model: NoiseModel
        public var weightsVersions: [Int]
        public var skipped: Int
        /// The network that denoised the frames.
        public var network: UNet.Input
    }

    public func run(
        input: String, logger: Logger = Logger(label: "moire.denoise"), progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Result {
        let stack = try ImageImport.load(input)
        guard !stack.isComplex else { throw MoireError(.format, "complex data cannot be denoised", place: input) }
        guard !stack.planes.isEmpty else { throw MoireError(.format, "no planes", place: input) }
        let w = stack.width
        let h = stack.height
        try validate()
        let model = try noiseModel(input: input, frames: stack.planes, width: w, height: h, logger: logger)
        let engine = try DNNLEngine()
        let network = resolvedInput(planes: stack.planes.count)
        let d = Denoiser(engine: engine, model: model, input: network, seed: seed)
        d.crop = min(crop, (min(w, h) / (pairs == .neighbour ? 8 : 4)) * 4)
        d.batch = batch
        d.learningRate = resolvedLearningRate
        d.averaging = averaging
        d.selfEnsemble = selfEnsemble ?? (stack.planes.count == 1)
        try loadStart(into: d.net)
        if deconvolve { d.deconvolution = try deconvolutionLoss(input: input, pixelUm: stack.pixelSizeUm) }
        // The network wants sides divisible by 4: pad by edge replication, crop back.
        let pw = (w + 3) / 4 * 4
        let ph = (h + 3) / 4 * 4
        func pad(_ f: [Float]) -> [Float] {
            guard pw != w || ph != h else { return f }
            return (0..<(pw * ph)).map { i in f[min(i / pw, h - 1) * w + min(i % pw, w - 1)] }
        }
        let total = stack.planes.count
        if let part, part.count > total {
            throw MoireError(.usage, "\(part.count) parts of \(total) frames: at most one part per frame", place: input)
        }
        let mine = part?.range(of: total) ?? 0..<total
        // A part starts its warm-up this many frames before its slice.
        let first = part == nil ? 0 : max(0, mine.lowerBound - max(0, partWarmUpFrames))
        var out: [[Float]] = []
        var versions: [Int] = []
        var skipped = 0
        var previous: [Float]?
        let schedule = schedule(frames: mine.upperBound - first)
        for i in first..<mine.upperBound {
            let plane = stack.planes[i]
            let written = mine.contains(i)
            guard allFinite(plane), (plane.max() ?? 0) > (plane.min() ?? 0) else {
                logger.warning("frame skipped: blank or not finite", metadata: ["frame": "\(i)"])
                previous = plane
                if written {
                    out.append(plane); versions.append(d.weightsVersion); skipped += 1
                }
                continue
            }
            if i > first, plane == stack.planes[i - 1], let copy = previous {
                // A repeated frame (a camera that resends a frame it dropped) holds no new evidence, and
                // as its own temporal context it would teach the network to pass its noise through.
                logger.warning(
                    "frame repeats the one before exactly; its denoised copy repeats too", metadata: ["frame": "\(i)"])
                if written {
                    out.append(copy)
                    versions.append(d.weightsVersion)
                }
                progress(i + 1 - first, mine.upperBound - first)
                continue
            }
            let p = pad(plane)
            let partner =
                pairs == .oddEven && stack.planes.count > 1
                ? pad(stack.planes[Self.partner(of: i, count: stack.planes.count)]) : nil
            // The schedule counts from the frame this run (or part) starts at.
            for _ in 0..<schedule.steps(frame: i - first) {
                try adaptStep(
                    d, plane: p, partner: partner, width: pw, height: ph,
                    seed: seed &+ UInt64(i) &* 7919 &+ UInt64(d.weightsVersion), place: input)
            }
            let den = try d.denoise(p, width: pw, height: ph)
            let cropped = (0..<(w * h)).map { den[($0 / w) * pw + $0 % w] }
            previous = cropped
            if written {
                out.append(cropped)
                versions.append(d.weightsVersion)
            }
            progress(i + 1 - first, mine.upperBound - first)
        }
        if let saveWeights {
            try d.withInferenceWeights {
                try WeightsFile.save(d.net, weightsVersion: d.weightsVersion, to: saveWeights)
            }
        }
        return Result(
            frames: out, width: w, height: h, pixelUm: stack.pixelSizeUm, model: model, weightsVersions: versions,
            skipped: skipped, network: network)
    }

    /// One adaptation step on `plane` with this job's kind of pairs: recorrupted, against `partner`
    /// (its odd/even neighbour), or a Neighbor2Neighbor pair drawn with `seed`. Returns the loss.
    @discardableResult
    public func adaptStep(
        _ d: Denoiser, plane: [Float], partner: [Float]?, width: Int, height: Int, seed: UInt64, place: String
    ) throws -> Double {
        switch pairs {
        case .recorrupt:
            return try d.adapt(plane, width: width, height: height)
        case .oddEven:
            guard let partner, partner.allSatisfy(\.isFinite) else {
                throw MoireError(.usage, "odd/even pairs need at least two finite planes", place: place)
            }
            return try d.adapt(input: plane, target: partner, width: width, height: height)
        case .neighbour:
            var rng = SeededRandom(seed: seed)
            let (a, b) = NeighbourSampling.pair(plane, width: width, height: height, rng: &rng)
            return try d.adapt(input: a, target: b, width: width / 2, height: height / 2)
        }
    }

    /// The odd/even partner of plane `i` of `count` (≥ 2): 0↔1, 2↔3, …; an unpaired last plane pairs with the one before.
    public static func partner(of i: Int, count: Int) -> Int { i % 2 == 0 ? (i + 1 < count ? i + 1 : i - 1) : i - 1 }

    /// The deconvolution term for `input`: a Gaussian PSF of the given σ, or the widefield model from the recording.
    public func deconvolutionLoss(input: String, pixelUm: Double?) throws -> DeconvolutionLoss {
        if let psfSigmaPx { return try DeconvolutionLoss.gaussian(sigmaPx: psfSigmaPx, hessianWeight: hessianWeight) }
        guard let l = (try? RecordingFormat.openReader(path: input))?.layout, let em = l.emissionNm.first,
            l.objectiveNA > 0
        else {
            throw MoireError(
                .usage, "the PSF is unknown for this file (no recording optics); give --psf-sigma in pixels",
                place: input)
        }
        return try DeconvolutionLoss.widefield(
            na: l.objectiveNA, emissionNm: em, pixelUm: pixelUm ?? l.pixelSizeUm, hessianWeight: hessianWeight)
    }

    /// The noise model this job uses for `input`: given, the recording camera's, or estimated from
    /// `frames` (the differences of its first frames, or the first frame alone).
    public func noiseModel(
        input: String, frames: [[Float]], width: Int, height: Int, logger: Logger = Logger(label: "moire.denoise")
    ) throws -> NoiseModel {
        switch noise {
        case .fixed(let m):
            return m
        case .auto:
            return try Self.estimateNoise(input: input, frames: frames, width: width, height: height, logger: logger)
        case .fromFile:
            if let m = Self.cameraModel(input) { return m }
            logger.notice("no camera noise model in the file; estimating it from the frames")
            return try Self.estimateNoise(input: input, frames: frames, width: width, height: height, logger: logger)
        }
    }

    /// Estimates the noise model from the first frames (`NoiseEstimation`) and logs what it found.
    static func estimateNoise(
        input: String, frames: [[Float]], width: Int, height: Int, logger: Logger
    ) throws -> NoiseModel {
        let usable = frames.prefix(9).filter { $0.allSatisfy(\.isFinite) }
        do {
            let estimate = try NoiseEstimation.estimate(frames: Array(usable), width: width, height: height)
            let m = estimate.model
            var metadata: Logger.Metadata = [
                "method": "\(estimate.method.rawValue)", "framePairs": "\(estimate.framePairs)",
                "offset": "\(String(format: "%.2f", m.offset))", "gain": "\(String(format: "%.4g", m.gain))",
                "readVariance": "\(String(format: "%.4g", m.readVariance))",
                "clipped": "\(String(format: "%.2f%%", 100 * estimate.clippedFraction))",
            ]
            if let c = m.correlation {
                metadata["correlation"] =
                    "\(String(format: "x %.2f, y %.2f, diagonal %.2f", c.rho(1, 0), c.rho(0, 1), c.rho(1, 1)))"
                metadata["profile"] = "\(c.profileLines)"
            } else {
                metadata["correlation"] = "none (pixel-independent)"
            }
            logger.notice("noise model estimated", metadata: metadata)
            return m
        } catch let error as MoireError {
            throw MoireError(error.kind, error.message, place: input)
        }
    }

    /// The camera's noise model named by a Moiré recording (its protocol's rig's camera profile).
    static func cameraModel(_ path: String) -> NoiseModel? {
        guard let r = try? RecordingFormat.openReader(path: path), let l = r.layout,
            FileManager.default.fileExists(atPath: l.protocolFile),
            let p = try? AcquisitionProtocol.load(file: l.protocolFile)
        else { return nil }
        return NoiseModel(camera: p.rig.cameraProfile)
    }

    /// Writes denoised frames as a float32 OME-TIFF; each plane's header names the weights version.
    public static func write(_ r: Result, to path: String, name: String) throws {
        try FloatStack.write(
            r.frames, width: r.width, height: r.height, pixelUm: r.pixelUm ?? 1, to: path, name: name,
            stream: "den", mode: "denoised"
        ) { t, h in
            h.params = ["weightsVersion": String(r.weightsVersions[t])]
        }
    }
}
