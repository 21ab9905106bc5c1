import Foundation
import MoireCore

/// When a live reconstruction estimates its pattern parameters.
public enum EstimationPolicy: Sendable, Equatable, CustomStringConvertible {
    /// On the first complete phase set (or stack) of each channel, then reused.
    case once
    /// Again every N sets (2D) or time points (3D).
    case every(Int)
    /// Again when the modulation under the current parameters drops (the pattern has moved).
    case onDrop

    public var description: String {
        switch self {
        case .once: return "once"
        case .every(let n): return "every:\(n)"
        case .onDrop: return "on-drop"
        }
    }

    /// `once`, `every:N` (N ≥ 1) or `on-drop`.
    public init?(_ text: String) {
        switch text {
        case "once": self = .once
        case "on-drop": self = .onDrop
        default:
            guard text.hasPrefix("every:"), let n = Int(text.dropFirst(6)), n > 0 else { return nil }
            self = .every(n)
        }
    }
}

/// How many `moire worker` processes reconstruct a run's phase sets.
public enum WorkerCount: Sendable, Equatable {
    /// Wait (a while) for this many workers before the first set, then use whoever is connected.
    case count(Int)
    /// Use whoever connects, whenever; sets run in process while no worker is there.
    case auto

    /// The workers to wait for before the first set (nil: `auto`, none).
    public var expectedCount: Int? {
        if case .count(let count) = self { return count }
        return nil
    }
}

/// The protocol's `reconstruction:` block: live 2D-SIM, LLS-SIM and 3D-SIM.
public struct LiveReconstructionSpec: Sendable, Equatable {
    public var enabled = true
    public var estimation = EstimationPolicy.once
    public var wiener = WienerParameter.adaptive
    public var suppression = OrderSuppression.adaptive
    /// Camera background subtracted before the reconstruction (ADU); nil: the camera profile's offset.
    public var backgroundADU: Double?
    /// Also write SR frames (volumes) beside the raw recording.
    public var record = false
    /// Complete phase sets that may wait for the reconstruction (each holds its frames as floats).
    public var backlogSets = 32
    /// 2D-SIM sets reconstructed by `moire worker` processes (nil: in process).
    public var workers: WorkerCount?
    /// Where workers connect (the daemon's broker binds it): loopback tcp or ipc for workers on
    /// this machine, any tcp address with CURVE keys for workers elsewhere.
    public var workEndpoint = "tcp://127.0.0.1:5571"

    public init() {}

    /// The block as checked, with file:line:column on every refusal.
    init(_ node: ConfigNode) throws {
        enabled = try node.optionalBool("enabled") ?? enabled
        record = try node.optionalBool("record") ?? record
        if let estimateNode = try node.child("estimate") {
            let text = try estimateNode.string()
            guard let policy = EstimationPolicy(text) else {
                throw estimateNode.error("expected once, every:N (N ≥ 1) or on-drop; found '\(text)'")
            }
            estimation = policy
        }
        if let text = try node.optionalAutoOrDouble("wiener", in: 0.0001...10) {
            wiener = WienerParameter(text) ?? wiener
        }
        if let text = try node.optionalAutoOrDouble("suppression", in: 0...1) {
            suppression = OrderSuppression(text) ?? suppression
        }
        backgroundADU = try node.optionalDouble("background", in: 0...65535, unit: " ADU")
        backlogSets = try node.optionalInt("backlog", in: 1...1000) ?? backlogSets
        (workers, workEndpoint) = try WorkerCount.read(from: node, defaultEndpoint: workEndpoint)
        try node.finish()
    }
}

extension WorkerCount {
    /// A block's `workers` (auto or 1…1024) and `work_endpoint` (tcp://HOST:PORT, or ipc://PATH
    /// resolved against the protocol's folder).
    static func read(from node: ConfigNode, defaultEndpoint: String) throws -> (WorkerCount?, String) {
        var workers: WorkerCount?
        var endpoint = defaultEndpoint
        if let workersNode = try node.child("workers") {
            let text = try workersNode.string()
            if text == "auto" {
                workers = .auto
            } else if let count = Int(text), (1...1024).contains(count) {
                workers = .count(count)
            } else {
                throw workersNode.error("workers must be auto or a number 1…1024; found '\(text.prefix(40))'")
            }
        }
        if let endpointNode = try node.child("work_endpoint") {
            let text = try endpointNode.string()
            guard text.hasPrefix("tcp://") || text.hasPrefix("ipc://") else {
                throw endpointNode.error("work_endpoint is tcp://HOST:PORT or ipc://PATH; found '\(text.prefix(80))'")
            }
            endpoint = text.hasPrefix("ipc://") ? "ipc://" + node.resolvePath(String(text.dropFirst(6))) : text
        }
        return (workers, endpoint)
    }
}

/// Where live denoising's starting weights come from.
public enum StartingWeights: Sendable, Equatable {
    /// The model shipped with Moiré for the network's input (with or without temporal context).
    case shipped
    /// Random initialisation.
    case scratch
    /// A weights file (path resolved against the protocol's folder).
    case file(String)
}

/// Which pairs live denoising adapts on (raw frames).
public enum DenoisePairs: String, Sendable, Equatable {
    /// The frame against a recorruption of itself by the camera's noise model.
    case recorrupt
    /// Each frame against the previous frame of the same channel and plane.
    case oddEven = "odd-even"
}

/// Where live denoising's camera noise model comes from.
public enum LiveNoiseSource: String, Sendable, Equatable {
    /// The camera profile's calibration (offset, gain, read noise, `noise_correlation`).
    case camera
    /// Measured from the run's first frames before any is denoised (`NoiseEstimation`).
    case auto
}

/// Whether the denoising network sees the frames before the current one.
public enum TemporalContextChoice: String, Sendable, Equatable {
    /// The current frame and a summary of the ones before it.
    case history
    /// The current frame alone.
    case frameOnly = "none"
}

/// The protocol's `denoise:` block: live test-time-adapted denoising (and deconvolution).
public struct LiveDenoiseSpec: Sendable, Equatable {
    /// Off without a `denoise:` block; on with one unless it says `enabled: false`.
    public var enabled = false
    public var stepsPerFrame = 2
    /// Adaptation steps on the first frame (SR: the first set) before the first denoised frame is
    /// published (nil: 100 for SR frames, whose network starts from scratch; 0 for raw frames).
    public var firstSteps: Int?
    public var crop = 64
    public var batch = 2
    public var learningRate: Float = 5e-4
    /// Inference weights follow the adapted ones as an exponential moving average (0: copy).
    public var ema: Float = 0
    /// Save the inference weights every N versions beside the recording (0: never).
    public var checkpointEvery = 0
    /// nil: the shipped model for raw frames, scratch for SR frames.
    public var weights: StartingWeights?
    /// nil: history with recorrupted pairs, none with odd-even pairs. SR frames never use it.
    public var context: TemporalContextChoice?
    public var pairs = DenoisePairs.recorrupt
    public var noise = LiveNoiseSource.camera
    /// Raw frames' network inference run by `moire worker` processes (nil: in process); the
    /// adaptation stays here. Workers connect to `workEndpoint`.
    public var workers: WorkerCount?
    public var workEndpoint = "tcp://127.0.0.1:5572"
    /// Live deconvolution (a second network, ZS-DeconvNet's second output) publishing `dcv`.
    public var deconvolve = false
    /// The Hessian regularisation weight of the deconvolution term.
    public var hessianWeight: Float = 0.0005

    public init() {}

    /// The block as checked, with file:line:column on every refusal.
    init(_ node: ConfigNode) throws {
        enabled = try node.optionalBool("enabled") ?? true
        stepsPerFrame = try node.optionalInt("steps_per_frame", in: 0...100) ?? stepsPerFrame
        firstSteps = try node.optionalInt("first_steps", in: 0...100_000)
        if let cropNode = try node.child("crop") {
            let value = try cropNode.int(in: 16...512)
            guard value % 4 == 0 else { throw cropNode.error("crop must be a multiple of 4; found \(value)") }
            crop = value
        }
        batch = try node.optionalInt("batch", in: 1...64) ?? batch
        if let rate = try node.optionalDouble("learning_rate", in: 1e-7...1) { learningRate = Float(rate) }
        if let average = try node.optionalDouble("ema", in: 0...0.999) { ema = Float(average) }
        checkpointEvery = try node.optionalInt("checkpoint_every", in: 0...1_000_000) ?? checkpointEvery
        if let pairsNode = try node.child("pairs") {
            let text = try pairsNode.string()
            guard let value = DenoisePairs(rawValue: text) else {
                throw pairsNode.error("pairs must be recorrupt or odd-even; found '\(text)'")
            }
            pairs = value
        }
        (workers, workEndpoint) = try WorkerCount.read(from: node, defaultEndpoint: workEndpoint)
        if let noiseNode = try node.child("noise") {
            let text = try noiseNode.string()
            guard let value = LiveNoiseSource(rawValue: text) else {
                throw noiseNode.error("noise must be camera or auto; found '\(text)'")
            }
            noise = value
        }
        deconvolve = try node.optionalBool("deconvolve") ?? deconvolve
        if let weight = try node.optionalDouble("hessian", in: 0...10) { hessianWeight = Float(weight) }
        if let contextNode = try node.child("context") {
            let text = try contextNode.string()
            guard let value = TemporalContextChoice(rawValue: text) else {
                throw contextNode.error("context must be history or none; found '\(text)'")
            }
            guard value == .frameOnly || pairs != .oddEven else {
                throw contextNode.error(
                    "context: history trains on recorrupted pairs; it cannot be used with pairs: odd-even")
            }
            context = value
        }
        if let weightsNode = try node.child("weights") {
            let text = try weightsNode.string()
            switch text {
            case "shipped": weights = .shipped
            case "scratch": weights = .scratch
            default:
                let path = node.resolvePath(text)
                guard FileManager.default.fileExists(atPath: path) else {
                    throw weightsNode.error("weights file '\(path)' does not exist")
                }
                weights = .file(path)
            }
        }
        try node.finish()
    }
}

/// What the light-sheet stage deskews: raw planes, or planes the live denoiser has denoised.
public enum LightSheetSource: String, Sendable, Equatable {
    case raw
    case denoised
}

/// The protocol's `light_sheet:` block (mode llsm): live deskew and deconvolution.
public struct LiveLightSheetSpec: Sendable, Equatable {
    /// Richardson–Lucy iterations (0: deskew only).
    public var iterations = 10
    /// Record volumes to `NAME.vol.ome.tif` beside the raw recording.
    public var recordVolumes = true
    /// Turn volumes into the coverslip frame.
    public var rotate = false
    public var source = LightSheetSource.raw
    /// The camera background (ADU); nil: estimated from each stack.
    public var backgroundADU: Float?

    public init() {}

    /// The block as checked; `sourceNode` is where `source` was given (for the check against `denoise`).
    init(_ node: ConfigNode, sourceNode: inout ConfigNode?) throws {
        iterations = try node.optionalInt("iterations", in: 0...500) ?? iterations
        recordVolumes = try node.optionalBool("record_volumes") ?? recordVolumes
        rotate = try node.optionalBool("rotate") ?? rotate
        if let sn = try node.child("source") {
            let text = try sn.string()
            guard let value = LightSheetSource(rawValue: text) else {
                throw sn.error("source must be raw or denoised; found '\(text)'")
            }
            source = value
            sourceNode = sn
        }
        if let background = try node.optionalDouble("background", in: 0...65535, unit: " ADU") {
            backgroundADU = Float(background)
        }
        try node.finish()
    }
}
