import Foundation
import MoireConfig
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

    /// The model a camera profile's calibration states (read variance = (gain · read noise)²).
    public init(camera c: CameraProfile) {
        self.init(offset: c.offsetADU, gain: c.gainADUPerE, readVariance: pow(c.readNoiseE * c.gainADUPerE, 2))
    }
}

/// Self-supervised training pairs by recorruption (Pang et al.; ZS-DeconvNet):
/// `ŷ = y + α·σ·g`, `ỹ = y − σ·g/α`, `σ² = β1·(y − b) + β2`, g ~ N(0, 1). Training f(ŷ) → ỹ is an
/// unbiased proxy for training on clean targets.
public enum Recorruption {
    /// Returns (input, target) in ADU for frame `y` (ADU), with one noise draw from `rng`.
    public static func pair(_ y: [Float], model: NoiseModel, alpha: Double = 1, rng: inout SeededRandom) -> (
        [Float], [Float]
    ) {
        var a = [Float](repeating: 0, count: y.count)
        var t = a
        for i in 0..<y.count {
            let s2 = max(0, model.gain * (Double(y[i]) - model.offset)) + model.readVariance
            let g = rng.normal() * s2.squareRoot()
            a[i] = Float(Double(y[i]) + alpha * g)
            t[i] = Float(Double(y[i]) - g / alpha)
        }
        return (a, t)
    }
}

/// Neighbor2Neighbor sub-sampling (Huang et al., 2021): from each 2×2 cell two different pixels are
/// drawn, giving two half-size images of the same scene whose noise is independent.
public enum NeighbourSampling {
    /// (g1, g2), each `width/2 × height/2`.
    public static func pair(_ image: [Float], width: Int, height: Int, rng: inout SeededRandom) -> ([Float], [Float]) {
        let w2 = width / 2
        let h2 = height / 2
        var a = [Float](repeating: 0, count: w2 * h2)
        var b = a
        // edge-sharing pairs in a 2×2 cell
        let neighbours = [(0, 1), (1, 0), (1, 3), (3, 1), (0, 2), (2, 0), (2, 3), (3, 2)]
        for y in 0..<h2 {
            for x in 0..<w2 {
                let (i, j) = neighbours[Int(rng.next() % 8)]
                func px(_ k: Int) -> Float { image[(2 * y + k / 2) * width + 2 * x + k % 2] }
                a[y * w2 + x] = px(i); b[y * w2 + x] = px(j)
            }
        }
        return (a, b)
    }
}
