import Foundation
import MoireCore
import MoireDenoise
import MoireReconstruction

/// Denoising for 2D-SIM that respects the illumination pattern, in one of two ways:
///
/// - `.rawPhases`: the network learns, by recorruption, to denoise the raw phase images; each phase
///   image is denoised, then the set is reconstructed.
/// - `.srPairs` (after ZS-DeconvNet-SIM): each raw phase image is recorrupted into a pair
///   (ŷ = y + α·σ·g, ỹ = y − σ·g/α), both sets are reconstructed with the same parameters, and the
///   network learns f(SR(ŷ)) → SR(ỹ). The reconstruction is linear, so the two SR images' noises
///   stay uncorrelated and the pair is an unbiased proxy for a clean target; inference denoises SR(y).
///
/// The reconstruction parameters are fixed (estimated beforehand), and so is the Wiener filter:
/// the network is the regulariser, so its inputs are reconstructed with one light, constant w
/// (`inputWiener`) rather than the adaptive filter, which would regularise the noisier training
/// pairs more than the input at inference and remove what the network can recover (measured on
/// the SIM denoising test: 22.8 dB with w = 0.05 against 22.2 dB with the adaptive filter kept
/// from the first set, which also left a peak at 2k). Not thread-safe; it sets the
/// reconstructor's Wiener option.
// Not Sendable: used by one thread at a time (see the doc).
public final class SIMDenoiser {
    public enum Method: String, Sendable, CaseIterable { case rawPhases = "raw", srPairs = "sr" }
    public let method: Method
    public let denoiser: Denoiser
    public var parameters: SIMParameters
    let rec: SIM2DReconstructor
    let model: NoiseModel
    var rng: SeededRandom

    public convenience init(
        engine: DNNLEngine, reconstructor: SIM2DReconstructor, parameters: SIMParameters, model: NoiseModel,
        method: Method, seed: UInt64 = 1
    ) {
        self.init(
            denoiser: Denoiser(engine: engine, model: method == .rawPhases ? model : Self.srModel, seed: seed),
            reconstructor: reconstructor, parameters: parameters, model: model, method: method, seed: seed)
    }

    /// With a given network (shared, e.g. by the channels of a live stage); for `.srPairs` its noise
    /// model should be `srModel`.
    public init(
        denoiser: Denoiser, reconstructor: SIM2DReconstructor, parameters: SIMParameters, model: NoiseModel,
        method: Method, seed: UInt64 = 1
    ) {
        self.method = method; self.rec = reconstructor; self.parameters = parameters; self.model = model
        reconstructor.options.wiener = .fixed(Self.inputWiener)
        self.denoiser = denoiser
        rng = SeededRandom(seed: seed &+ 7)
    }

    /// The normalisation model of a network that works on SR images: only pairs are used (no noise
    /// model), and SR images carry no camera offset.
    public static let srModel = NoiseModel(offset: 0, gain: 1, readVariance: 0)

    var setSize: Int { rec.angles * rec.phases }

    func check(_ set: [[Float]]) throws {
        guard set.count == setSize, set.allSatisfy({ $0.count == rec.width * rec.height }) else {
            throw MoireError(
                .usage, "a SIM set of \(setSize) frames of \(rec.width)×\(rec.height) is needed; got \(set.count)")
        }
    }

    /// The constant Wiener parameter of the network's inputs (training pairs and inference).
    public static let inputWiener = 0.05

    /// One adaptation step from a raw phase set (ADU). Returns the loss.
    @discardableResult
    public func adapt(set: [[Float]]) throws -> Double {
        try check(set)
        switch method {
        case .rawPhases:
            let frame = set[Int(rng.next() % UInt64(set.count))]
            return try denoiser.adapt(frame, width: rec.width, height: rec.height)
        case .srPairs:
            var a: [[Float]] = []
            var b: [[Float]] = []
            for f in set {
                let (x, y) = Recorruption.pair(f, width: rec.width, model: model, alpha: denoiser.alpha, rng: &rng)
                a.append(x); b.append(y)
            }
            let srA = try rec.reconstruct(a, parameters: parameters)
            let srB = try rec.reconstruct(b, parameters: parameters)
            return try denoiser.adapt(input: srA, target: srB, width: 2 * rec.width, height: 2 * rec.height)
        }
    }

    /// The network's input for a raw phase set (SR pairs): the set reconstructed with `parameters`
    /// and the constant `inputWiener`, as the training pairs are, by `reconstructor` (whose Wiener
    /// option this sets).
    public static func networkInput(
        _ set: [[Float]], parameters: SIMParameters, with reconstructor: SIM2DReconstructor
    ) throws -> [Float] {
        reconstructor.options.wiener = .fixed(inputWiener)
        return try reconstructor.reconstruct(set, parameters: parameters)
    }

    /// The denoised SR image (2× grid) of a raw phase set.
    public func reconstruct(set: [[Float]]) throws -> [Float] {
        try check(set)
        switch method {
        case .rawPhases:
            let clean = try set.map { try denoiser.denoise($0, width: rec.width, height: rec.height) }
            return try rec.reconstruct(clean, parameters: parameters)
        case .srPairs:
            let sr = try Self.networkInput(set, parameters: parameters, with: rec)
            return try denoiser.denoise(sr, width: 2 * rec.width, height: 2 * rec.height)
        }
    }
}
