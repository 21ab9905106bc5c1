import Foundation
import MoireCore

/// Which modulation the Wiener filter assumes for each orientation's bands ±1.
///
/// The filter passes a band in proportion to m² where noise dominates, so an orientation whose
/// modulation is estimated low (a weak estimate on sparse or dim data, more often than a weak
/// pattern) would be starved and the others would dominate the spectrum. One pattern generator
/// gives every orientation nearly the same modulation; `.common` uses the mean of the trusted
/// estimates for all of them, so the SR transfer function stays isotropic.
public enum ModulationInFilter: String, Codable, Sendable, Equatable, CaseIterable {
    case common
    case perOrientation = "per-orientation"

    /// The modulation the filter uses for every orientation of `params`.
    public func modulations(_ params: SIMParameters) -> [Double] {
        switch self {
        case .perOrientation:
            return params.angles.map(\.modulation)
        case .common:
            let trusted = params.angles.filter { !$0.flagged }
            let pool = trusted.isEmpty ? params.angles : trusted
            let mean = pool.map(\.modulation).reduce(0, +) / Double(max(pool.count, 1))
            return params.angles.map { _ in mean }
        }
    }
}

extension OrderSuppression {
    /// The factor on band ±1 of an orientation `distance` cycles/µm from its raw-spectrum origin
    /// (`gaussianSigma`: the fixed suppression's width).
    public func factor(distance: Double, leak: OrderLeak?, gaussianSigma: Double) -> Double {
        switch self {
        case .fixed(let s):
            return s > 0 ? 1 - s * exp(-distance * distance / (2 * gaussianSigma * gaussianSigma)) : 1
        case .adaptive:
            return leak?.attenuation(at: distance) ?? 1
        }
    }
}

/// The signal and noise of one phase set, as the adaptive Wiener filter sees them.
///
/// Measured on band 0 (the sum over orientations of each orientation's separated band 0):
/// - `noisePower`: the mean |B̃(f)|² beyond 1.05 f_c, where no signal passes the OTF, divided by
///   the number of orientations: the noise power of one orientation's band (bands ±1 carry the
///   same, since the least-squares separation weighs the phases alike);
/// - the object's power spectrum `P(ρ) = amplitude · ρ^(−exponent)` (ρ = f/f_c), fitted in log–log
///   to radial averages of (|B̃|² − noise)/(orientations² · OTF²) between 0.1 and 0.7 f_c.
/// The Wiener regularisation at normalised frequency ρ is then `noisePower / P(ρ)`.
public struct SpectralModel: Sendable, Equatable {
    public var noisePower: Double
    public var amplitude: Double
    public var exponent: Double

    /// w² at normalised frequency ρ (ρ ≥ a floor that keeps it finite at the origin).
    public func regularisation(atNormalisedFrequency rho: Double) -> Double {
        noisePower / (amplitude * pow(max(rho, 1e-3), -exponent))
    }

    /// The constant-w equivalent at the OTF cutoff (for reports).
    public var wienerAtCutoff: Double { regularisation(atNormalisedFrequency: 1).squareRoot() }

    /// The model the filter is built from: the regularisation `noisePower/amplitude · ρ^exponent`
    /// with log(noisePower/amplitude) rounded to 0.1 and the exponent to 0.03, steps too small to
    /// see in an SR frame. Sets whose models round alike share one filter (it is not rebuilt), and
    /// the filter of a set depends on that set alone, never on the sets before it: a run split
    /// into parts (batch jobs) gives what the whole run gives.
    var quantizedForFilter: SpectralModel {
        let logRatioStep = 0.1
        let exponentStep = 0.03
        let logRatio = (log(noisePower / amplitude) / logRatioStep).rounded() * logRatioStep
        return SpectralModel(
            noisePower: exp(logRatio), amplitude: 1, exponent: (exponent / exponentStep).rounded() * exponentStep)
    }

    /// Fits the model to a band-0 half spectrum.
    ///
    /// - Parameters:
    ///   - power: |B̃|² per half-spectrum sample.
    ///   - rho: normalised radial frequency f/f_c of each sample.
    ///   - otf: the detection OTF at each sample.
    ///   - orientations: how many orientations' bands 0 were summed.
    /// - Returns: nil when nothing lies beyond the OTF support (no noise reference) or when the
    ///   signal stands above the noise in fewer than three radial bins.
    public static func fit(power: UnsafeBufferPointer<Float>, rho: [Float], otf: [Float], orientations: Int)
        -> SpectralModel?
    {
        fit(power: power, sampling: Sampling(rho: rho, otf: otf), orientations: orientations)
    }

    /// Where each spectrum sample goes in the fit (the noise, a radial bin, or nowhere) and what
    /// each bin holds besides the power: all fixed by the grid, made once per reconstructor.
    struct Sampling {
        static let noiseSample: Int8 = -2
        static let unused: Int8 = -1
        static let bins = 16
        /// Per sample: `noiseSample`, `unused` or its bin.
        let destination: [Int8]
        let binCount: [Int]
        let binOTF2: [Double]
        let binLogRho: [Double]

        init(rho: [Float], otf: [Float]) {
            let beyond: Float = 1.05
            let low = log(0.1)
            let high = log(0.7)
            var destination = [Int8](repeating: Self.unused, count: rho.count)
            var binCount = [Int](repeating: 0, count: Self.bins)
            var binOTF2 = [Double](repeating: 0, count: Self.bins)
            var binLogRho = [Double](repeating: 0, count: Self.bins)
            for i in 0..<rho.count {
                let r = rho[i]
                if r > beyond {
                    destination[i] = Self.noiseSample
                    continue
                }
                guard r >= 0.1, r < 0.7 else { continue }
                let logRho = log(Double(r))
                let bin = min(Self.bins - 1, Int(Double(Self.bins) * (logRho - low) / (high - low)))
                destination[i] = Int8(bin)
                binCount[bin] += 1
                binOTF2[bin] += Double(otf[i] * otf[i])
                binLogRho[bin] += logRho
            }
            self.destination = destination
            self.binCount = binCount
            self.binOTF2 = binOTF2
            self.binLogRho = binLogRho
        }
    }

    /// Fits the model to a half spectrum whose samples `sampling` places (the per-set work: one
    /// pass summing the power into the noise and the bins).
    static func fit(power: UnsafeBufferPointer<Float>, sampling: Sampling, orientations: Int) -> SpectralModel? {
        let bins = Sampling.bins
        var noiseSum = 0.0
        var noiseCount = 0
        var binPower = [Double](repeating: 0, count: bins)
        sampling.destination.withUnsafeBufferPointer { destination in
            for i in 0..<destination.count {
                let d = destination[i]
                if d >= 0 {
                    binPower[Int(d)] += Double(power[i])
                } else if d == Sampling.noiseSample {
                    noiseSum += Double(power[i])
                    noiseCount += 1
                }
            }
        }
        let binCount = sampling.binCount
        let binOTF2 = sampling.binOTF2
        let binLogRho = sampling.binLogRho
        guard noiseCount >= 64 else { return nil }
        let noiseOfSum = noiseSum / Double(noiseCount)
        let count = Double(orientations)
        var xs: [Double] = []
        var ys: [Double] = []
        for b in 0..<bins where binCount[b] >= 4 {
            let n = Double(binCount[b])
            let signal = binPower[b] / n - noiseOfSum
            // A bin whose power does not clearly exceed the noise says nothing about the signal.
            guard signal > 0.1 * noiseOfSum, binOTF2[b] > 0 else { continue }
            xs.append(binLogRho[b] / n)
            ys.append(log(signal / (count * count * binOTF2[b] / n)))
        }
        guard xs.count >= 3 else { return nil }
        let mx = xs.reduce(0, +) / Double(xs.count)
        let my = ys.reduce(0, +) / Double(ys.count)
        var sxy = 0.0
        var sxx = 0.0
        for (x, y) in zip(xs, ys) {
            sxy += (x - mx) * (y - my)
            sxx += (x - mx) * (x - mx)
        }
        let slope = sxx > 0 ? sxy / sxx : 0
        let exponent = min(5, max(0, -slope))
        // Intercept refitted with the clamped exponent.
        let intercept = zip(xs, ys).map { $1 + exponent * $0 }.reduce(0, +) / Double(xs.count)
        return SpectralModel(noisePower: noiseOfSum / count, amplitude: exp(intercept), exponent: exponent)
    }
}
