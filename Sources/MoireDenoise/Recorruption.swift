import Foundation
import MoireCore

/// The camera noise model of a frame in ADU: variance = gain·(signal − offset) + readVariance.
public struct NoiseModel: Codable, Sendable, Equatable {
    public var offset: Double
    /// β1: ADU per photoelectron.
    public var gain: Double
    /// β2: read-noise variance in ADU².
    public var readVariance: Double

    public init(offset: Double, gain: Double, readVariance: Double) {
        self.offset = offset; self.gain = gain; self.readVariance = readVariance
    }
}

/// Self-supervised training pairs by recorruption (Pang et al.; ZS-DeconvNet):
/// `ŷ = y + α·σ·g`, `ỹ = y − σ·g/α`, `σ² = β1·(y − b) + β2`, g ~ N(0, 1). Training f(ŷ) → ỹ is an
/// unbiased proxy for training on clean targets.
public enum Recorruption {
    /// Returns (input, target) in ADU for frame `y` (ADU), with one noise draw from `rng`.
    public static func pair(_ y: [Float], model: NoiseModel, alpha: Double = 1, rng: inout SeededRandom) -> ([Float], [Float]) {
        var a = [Float](repeating: 0, count: y.count), t = a
        for i in 0..<y.count {
            let s2 = max(0, model.gain * (Double(y[i]) - model.offset)) + model.readVariance
            let g = rng.normal() * s2.squareRoot()
            a[i] = Float(Double(y[i]) + alpha * g)
            t[i] = Float(Double(y[i]) - g / alpha)
        }
        return (a, t)
    }
}
