import Foundation
import MoireCore
import MoireDenoise
import MoirePipeline
import MoireReconstruction
import MoireTesting
import Testing

@Suite(.serialized) struct SIMDenoiseTests {
    /// The denoising issue's SIM acceptance: at low light (≈ 15 photoelectrons at the brightest raw
    /// pixel) the denoised SR frame is closer to the ground truth (the reconstruction of a high-signal
    /// acquisition of the same specimen with the same parameters) than the plain reconstruction, by
    /// PSNR and SSIM, and shows no new periodic artifacts at the pattern's order positions. Both
    /// methods are measured; SR pairs (ZS-DeconvNet-SIM) is the better one and the one kept (here
    /// 22.16 → 22.81 dB, SSIM 0.571 → 0.666 over the adaptive plain reconstruction; the raw phases 19.40 dB).
    @Test func denoisedSRIsCloserToTruthThanPlainSRWithoutNewPeriodicArtifacts() throws {
        let roi = 128
        let low = try Fixtures.simulateSIM(roi: roi, powerMw: 2, exposureMs: 1, timepoints: 10, seed: 5)
        let high = try Fixtures.simulateSIM(roi: roi, powerMw: 200, exposureMs: 20, timepoints: 1, seed: 6)
        var o = SIM2DOptions()
        o.background = low.offsetADU
        let rec = try SIM2DReconstructor(width: roi, height: roi, pixelUm: low.pixelUm, angles: 3, phases: 3,
                                         otf: IdealOTF(na: 1.49, emissionNm: 525), options: o)
        let params = try rec.estimate(high.sets[0], priors: PatternPrior.from(high.nominal, angles: 3, phases: 3))
        let truth = try rec.reconstruct(high.sets[0], parameters: params)
        let cam = low.proto.rig.cameraProfile
        let peak = (Double(low.sets.flatMap { $0 }.map { $0.max()! }.max()!) - cam.offsetADU) / cam.gainADUPerE
        #expect(peak > 8 && peak < 30, "brightest raw pixel \(peak) e⁻")
        let plain = try rec.reconstruct(low.sets.last!, parameters: params)
        let n = 2 * roi, px = low.pixelUm / 2
        func quality(_ x: [Float]) -> (Double, Double) { (ImageMetrics.psnr(x, truth: truth), ImageMetrics.ssim(x, truth: truth, width: n)) }
        /// At each order position (k and 2k of every orientation): |F| of the fitted image, and how far it stands out of its ring.
        func orders(_ x: [Float]) -> [(mag: Double, ratio: Double)] {
            let (_, f) = ImageMetrics.fitted(x, truth: truth)
            return params.angles.flatMap { a in (1...2).map { h in
                (OrderPeaks.magnitude(f, width: n, height: n, pixelUm: px, kx: a.kx, ky: a.ky, harmonic: h),
                 OrderPeaks.ratio(f, width: n, height: n, pixelUm: px, kx: a.kx, ky: a.ky, harmonic: h))
            } }
        }
        let (pPlain, sPlain) = quality(plain)
        let oPlain = orders(plain), oTruth = orders(truth)
        var results: [SIMDenoiser.Method: (Double, Double)] = [:]
        for method in SIMDenoiser.Method.allCases {
            let sd = SIMDenoiser(engine: try DNNLEngine(), reconstructor: rec, parameters: params, model: NoiseModel(camera: cam), method: method, seed: 3)
            let d = sd.denoiser
            d.crop = 128; d.batch = 1; d.learningRate = 3e-3; d.decay = (0.05, 300); d.averaging = 0.99
            for s in 0..<300 { try sd.adapt(set: low.sets[s % low.sets.count]) }
            let out = try sd.reconstruct(set: low.sets.last!)
            let (p, s) = quality(out)
            results[method] = (p, s)
            print(String(format: "SIM denoising (%@): PSNR %.2f → %.2f dB, SSIM %.3f → %.3f", method.rawValue, pPlain, p, sPlain, s))
            // The kept method must beat the plain reconstruction (whose adaptive Wiener filter is
            // itself the MSE-optimal linear estimate); denoising the raw phases no longer does.
            if method == .srPairs { #expect(p > pPlain && s > sPlain, "\(method)") }
            // No new periodic artifacts (for the kept method; denoising the raw phases shows a peak at one order
            // position, 1.6× the truth's there): at every order position the denoised image has no more energy than the
            // plain reconstruction or the truth (+10 %), or it does not stand out of its neighbourhood at all.
            for (i, o) in orders(out).enumerated() where method == .srPairs {
                #expect(o.mag <= 1.1 * max(oPlain[i].mag, oTruth[i].mag) || o.ratio <= 2.5,
                        "\(method) order position \(i): |F| \(o.mag) (plain \(oPlain[i].mag), truth \(oTruth[i].mag)), peak/ring \(o.ratio)")
            }
        }
        #expect(results[.srPairs]!.0 > results[.rawPhases]!.0 + 1, "SR pairs is the better method (kept)")
    }
}
