import Foundation
import MoireConfig
import MoireCore

/// The camera noise model of a frame in ADU: variance = gain·(signal − offset) + readVariance, and
/// optionally its spatial correlation (nil: pixel-independent noise).
public struct NoiseModel: Codable, Sendable, Equatable {
    public var offset: Double
    /// β1: ADU per photoelectron.
    public var gain: Double
    /// β2: read-noise variance in ADU².
    public var readVariance: Double
    /// How the noise spreads over neighbouring pixels; nil when each pixel's noise is its own.
    public var correlation: NoiseCorrelation?

    public init(offset: Double, gain: Double, readVariance: Double, correlation: NoiseCorrelation? = nil) {
        self.offset = offset
        self.gain = gain
        self.readVariance = readVariance
        self.correlation = correlation
    }

    /// One line for people: the three parameters and the correlation of neighbouring pixels.
    public var summary: String {
        let parameters = String(
            format: "offset %.1f ADU, gain %.3f ADU/e⁻, read variance %.2f ADU²", offset, gain, readVariance)
        guard let correlation else { return parameters + ", pixel-independent" }
        return parameters
            + String(
                format: ", correlated (neighbours: x %.2f, y %.2f, diagonal %.2f)", correlation.rho(1, 0),
                correlation.rho(0, 1), correlation.rho(1, 1))
    }

    /// The noise variance (ADU²) of a pixel whose value is `signal` ADU.
    public func variance(at signal: Double) -> Double {
        max(0, gain * (signal - offset)) + readVariance
    }

    /// The model a camera profile's calibration states (read variance = (gain · read noise)²).
    /// The profile's calibration, with the noise correlation it states (none: pixel-independent).
    public init(camera c: CameraProfile) {
        let correlation = c.noiseCorrelation.isEmpty ? nil : NoiseCorrelation(lags: c.noiseCorrelation)
        self.init(
            offset: c.offsetADU, gain: c.gainADUPerE, readVariance: pow(c.readNoiseE * c.gainADUPerE, 2),
            correlation: correlation)
    }
}

/// Self-supervised training pairs by recorruption (Pang et al.; ZS-DeconvNet):
/// `ŷ = y + α·g`, `ỹ = y − g/α`, where g has the covariance of the frame's own noise:
/// `g = σ·w` with `σ² = β1·(y − b) + β2` and w ~ N(0, 1) per pixel, or, for spatially correlated
/// noise, `g = K ⊛ (σ·w)` (`NoiseCorrelation`). Then the noises of ŷ and ỹ are uncorrelated and
/// training f(ŷ) → ỹ is an unbiased proxy for training on clean targets; with pixel-independent g
/// on correlated noise it is not (the target keeps the correlated part of the noise).
public enum Recorruption {
    /// Returns (input, target) in ADU for frame `y` (ADU, `width` pixels per row), with one noise draw from `rng`.
    public static func pair(
        _ y: [Float], width: Int, model: NoiseModel, alpha: Double = 1, rng: inout SeededRandom
    ) -> ([Float], [Float]) {
        var noise = [Float](repeating: 0, count: y.count)
        for i in 0..<y.count {
            noise[i] = Float(rng.normal() * model.variance(at: Double(y[i])).squareRoot())
        }
        if let correlation = model.correlation {
            noise = correlation.filter(noise, width: width, height: y.count / width)
        }
        var input = [Float](repeating: 0, count: y.count)
        var target = input
        let alpha = Float(alpha)
        for i in 0..<y.count {
            input[i] = y[i] + alpha * noise[i]
            target[i] = y[i] - noise[i] / alpha
        }
        return (input, target)
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
