import Foundation
import MoireCore
import MoireReconstruction
import MoireTesting
import Testing

@Suite struct SpectralModelTests {
    /// A half spectrum drawn from the model itself: power-law signal through the ideal OTF, white
    /// noise, each sample scattered as a chi-square with 2 degrees of freedom (|complex Gaussian|²).
    func syntheticSpectrum(amplitude: Double, exponent: Double, noise: Double, orientations: Int, maxRho: Double)
        -> (power: [Float], rho: [Float], otf: [Float]) {
        var generator = SplitMix64(seed: 7)
        let otf = IdealOTF(na: 1, emissionNm: 2000)  // cutoff 1: the OTF of ρ directly
        var power: [Float] = [], rho: [Float] = [], transfer: [Float] = []
        let side = 200
        for v in 0..<side { for u in 0..<side {
            let r = hypot(Double(u), Double(v)) / Double(side) * maxRho
            guard r > 0, r <= maxRho else { continue }
            let h = otf.value(r)
            let count = Double(orientations)
            let expected = count * count * h * h * amplitude * pow(r, -exponent) + count * noise
            let scatter = -log(max(generator.nextUnit(), 1e-12))
            power.append(Float(expected * scatter))
            rho.append(Float(r))
            transfer.append(Float(h))
        } }
        return (power, rho, transfer)
    }

    @Test func fitRecoversThePowerLawAndTheNoiseOfAKnownSpectrum() throws {
        for (exponent, noise) in [(1.2, 50.0), (0.2, 5.0), (2.5, 500.0)] {
            let s = syntheticSpectrum(amplitude: 1e4, exponent: exponent, noise: noise, orientations: 3, maxRho: 1.4)
            let fitted = s.power.withUnsafeBufferPointer {
                SpectralModel.fit(power: $0, rho: s.rho, otf: s.otf, orientations: 3)
            }
            let model = try #require(fitted)
            #expect(abs(model.exponent - exponent) < 0.15, "exponent \(model.exponent) for \(exponent)")
            #expect(abs(model.noisePower - noise) / noise < 0.05, "noise \(model.noisePower) for \(noise)")
            #expect(abs(log(model.amplitude / 1e4)) < 0.3, "amplitude \(model.amplitude)")
        }
    }

    @Test func noRegionBeyondTheSupportGivesNoModel() {
        // The OTF reaches the spectrum's edge: nothing measures the noise alone.
        let s = syntheticSpectrum(amplitude: 1e4, exponent: 1, noise: 50, orientations: 3, maxRho: 1.0)
        let fitted = s.power.withUnsafeBufferPointer {
            SpectralModel.fit(power: $0, rho: s.rho, otf: s.otf, orientations: 3)
        }
        #expect(fitted == nil)
    }

    @Test func wienerAndSuppressionSettingsParseAsTyped() {
        #expect(WienerParameter("auto") == .adaptive)
        #expect(WienerParameter("0.05") == .fixed(0.05))
        #expect(WienerParameter("-1") == nil)
        #expect(WienerParameter("lots") == nil)
        #expect(OrderSuppression("auto") == .adaptive)
        #expect(OrderSuppression("0.5") == .fixed(0.5))
        #expect(OrderSuppression("1.5") == nil)
    }
}

/// PSNR (dB, peak: the reference's range) of `image` against `reference` after the least-squares
/// affine fit a·image + b, so that scale and offset do not count.
func affineFitPSNR(_ image: [Float], _ reference: [Float]) -> Double {
    let count = Double(image.count)
    let meanImage = image.reduce(0.0) { $0 + Double($1) } / count
    let meanReference = reference.reduce(0.0) { $0 + Double($1) } / count
    var sxx = 0.0
    var sxr = 0.0
    for (x, r) in zip(image, reference) {
        sxx += (Double(x) - meanImage) * (Double(x) - meanImage)
        sxr += (Double(x) - meanImage) * (Double(r) - meanReference)
    }
    let slope = sxx > 0 ? sxr / sxx : 0
    var mse = 0.0
    for (x, r) in zip(image, reference) {
        let d = slope * (Double(x) - meanImage) + meanReference - Double(r)
        mse += d * d
    }
    let range = Double((reference.max() ?? 1) - (reference.min() ?? 0))
    return 10 * log10(range * range / max(mse / count, 1e-30))
}

@Suite(.serialized) struct AdaptiveWienerTests {
    /// At two light levels, the adaptive filter is as faithful as the best of a range of constant
    /// w chosen afterwards, and regularises more where there is less light. The reference is the
    /// same specimen at 50× the light, reconstructed with the same parameters and a small w.
    @Test func adaptiveFilterMatchesTheBestConstantWAtEveryLightLevel() throws {
        let roi = 128
        let bright = try Fixtures.simulateSIM(roi: roi, powerMw: 100, exposureMs: 200, seed: 3)
        let rec = try reconstructor(bright, roi: roi)
        let params = try rec.estimate(bright.sets[0], priors: PatternPrior.from(bright.nominal, angles: 3, phases: 3))
        rec.options.wiener = .fixed(0.01)
        let reference = try rec.reconstruct(bright.sets[0], parameters: params)
        var regularisation: [Double] = []
        for powerMw in [2.0, 20.0] {
            let data = try Fixtures.simulateSIM(roi: roi, powerMw: powerMw, exposureMs: 4, seed: 5)
            rec.options.wiener = .adaptive
            let adaptive = affineFitPSNR(try rec.reconstruct(data.sets[0], parameters: params), reference)
            let model = try #require(rec.lastSpectralModel, "the adaptive filter found no signal and noise at \(powerMw) mW")
            regularisation.append(model.wienerAtCutoff)
            var best = -Double.infinity
            var bestW = 0.0
            for w in [0.01, 0.03, 0.1, 0.3, 1.0] {
                rec.options.wiener = .fixed(w)
                let score = affineFitPSNR(try rec.reconstruct(data.sets[0], parameters: params), reference)
                if score > best { best = score; bestW = w }
            }
            #expect(adaptive > best - 0.5, "\(powerMw) mW: adaptive \(adaptive) dB, best constant w \(bestW): \(best) dB")
        }
        #expect(regularisation[0] > 2 * regularisation[1], "w at the cutoff, dim then bright: \(regularisation)")
    }
}
