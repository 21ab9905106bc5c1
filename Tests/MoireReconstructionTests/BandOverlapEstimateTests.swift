import Foundation
import MoireCore
import MoireFFT
@testable import MoireReconstruction
import MoireSimulation
import Testing

/// Estimation on noise-free frames that a camera integrates over its square pixels, with the
/// true pattern known: the modulation depth (band +1 is recorded at f + k, band 0 at f, so the
/// pixels weaken band +1 more, and an estimator that leaves them out reads the modulation low, the
/// more so the steeper the object's spectrum and the nearer |k| is to the cutoff), and the phase
/// steps where the object is sparse (the bands' agreement where they overlap, not each frame's
/// correlation with band 0).
@Suite struct BandOverlapEstimateTests {
    /// The ideal OTF's values, claimed as measured through the camera (pixels included).
    struct PixelsIncludedOTF: RadialOTF {
        let ideal: IdealOTF
        func value(_ f: Double) -> Double { ideal.value(f) }
        var cutoff: Double { ideal.cutoff }
        var includesPixelIntegration: Bool { true }
    }

    static let side = 128
    static let fine = 4
    static let na = 1.4
    static let emissionNm = 600.0
    static let modulation = 0.5
    /// Wave vectors in whole cycles over the field, so the periodic simulation has no seam:
    /// about 0.92 of the cutoff, 60° apart.
    static let cycles = [(52, 0), (-26, 45), (-26, -45)]
    static var pixelUm: Double { 0.9 * emissionNm / 1000 / (4 * na) }

    /// Nine noise-free frames of an object on the fine grid: the pattern
    /// `1 + m·cos(2πk·r + φ)` on the fine grid, the ideal OTF, then each camera pixel the sum of
    /// its fine pixels.
    /// Random filaments: lines one fine pixel wide.
    static func filaments() -> [Float] {
        let n = side * fine
        var object = [Float](repeating: 0, count: n * n)
        var random = SimRandom(seed: 3)
        for _ in 0..<60 {
            let x0 = random.uniform() * Double(n)
            let y0 = random.uniform() * Double(n)
            let angle = random.uniform() * Double.pi
            for t in stride(from: -Double(n) / 3, to: Double(n) / 3, by: 0.5) {
                let x = (Int((x0 + t * cos(angle)).rounded()) % n + n) % n
                let y = (Int((y0 + t * sin(angle)).rounded()) % n + n) % n
                object[y * n + x] = 1
            }
        }
        return object
    }

    /// Sparse puncta: single fine pixels of random brightness.
    static func puncta() -> [Float] {
        let n = side * fine
        var object = [Float](repeating: 0, count: n * n)
        var random = SimRandom(seed: 5)
        for _ in 0..<800 {
            let x = Int(random.uniform() * Double(n))
            let y = Int(random.uniform() * Double(n))
            object[y * n + x] = Float(0.5 + random.uniform())
        }
        return object
    }

    static func frames(of object: [Float]) throws -> [[Float]] {
        let n = side * fine
        let fineUm = pixelUm / Double(fine)
        let forward = try FFT.plan2D(width: n, height: n, kind: .c2cForward)
        let backward = try FFT.plan2D(width: n, height: n, kind: .c2cBackward)
        let spectrum = AlignedBuffer<Complex32>(count: n * n)
        let image = AlignedBuffer<Complex32>(count: n * n)
        let otf = IdealOTF(na: na, emissionNm: emissionNm)
        let fieldUm = Double(n) * fineUm
        var frames: [[Float]] = []
        for (u, v) in cycles {
            for phase in 0..<3 {
                let phi = 2 * Double.pi * Double(phase) / 3 + 0.7
                for y in 0..<n {
                    for x in 0..<n {
                        let a = 2 * Double.pi * (Double(u * x + v * y) / Double(n)) + phi
                        image[y * n + x] = Complex32(object[y * n + x] * Float(1 + modulation * cos(a)), 0)
                    }
                }
                forward.execute(image.pointer, spectrum.pointer)
                for y in 0..<n {
                    for x in 0..<n {
                        let fx = Double(x <= n / 2 ? x : x - n) / fieldUm
                        let fy = Double(y <= n / 2 ? y : y - n) / fieldUm
                        let g = Float(otf.value(hypot(fx, fy)))
                        let s = spectrum[y * n + x]
                        spectrum[y * n + x] = Complex32(s.re * g, s.im * g)
                    }
                }
                backward.execute(spectrum.pointer, image.pointer)
                var frame = [Float](repeating: 0, count: side * side)
                for y in 0..<n {
                    for x in 0..<n {
                        frame[(y / fine) * side + x / fine] += image[y * n + x].re
                    }
                }
                frames.append(frame)
            }
        }
        // One scale for all nine (each frame's own would break the bands' relation).
        let peak = frames.map { $0.max()! }.max()!
        return frames.map { frame in frame.map { 1000 * $0 / peak } }
    }

    static func estimate(otf: RadialOTF, frames: [[Float]]) throws -> SIMParameters {
        let rec = try SIM2DReconstructor(
            width: side, height: side, pixelUm: pixelUm, angles: 3, phases: 3, otf: otf, options: SIM2DOptions())
        let fieldUm = Double(side) * pixelUm
        let priors = cycles.map { (u, v) in
            PatternPrior(
                kx: Double(u) / fieldUm, ky: Double(v) / fieldUm,
                phases: (0..<3).map { 2 * Double.pi * Double($0) / 3 }, modulation: 0.7)
        }
        let parameters = try rec.estimate(frames, priors: priors)
        #expect(!parameters.flagged)
        return parameters
    }

    @Test func theModulationOfPixelIntegratedFramesIsReadTrue() throws {
        let frames = try Self.frames(of: Self.filaments())
        let ideal = IdealOTF(na: Self.na, emissionNm: Self.emissionNm)
        let corrected = try Self.estimate(otf: ideal, frames: frames).angles.map(\.modulation)
        for m in corrected {
            #expect(abs(m - Self.modulation) / Self.modulation < 0.02, "modulation \(m) for \(Self.modulation)")
        }
        // The same frames with the pixels taken as part of the OTF: the estimate reads low.
        let uncorrected = try Self.estimate(otf: PixelsIncludedOTF(ideal: ideal), frames: frames).angles.map(
            \.modulation)
        for (m, low) in zip(corrected, uncorrected) {
            #expect(low < m - 0.02 * Self.modulation, "without the pixels' transfer \(low), with it \(m)")
        }
    }

    /// The frames' phases step by exactly 120°. Read from each frame's correlation with band 0 at k,
    /// sparse puncta put them several degrees off (band −1 of the frame correlates with band 0 as
    /// strongly as band +1 does); the bands' agreement where they overlap puts them right.
    @Test func thePhaseStepsOfSparsePunctaAreReadTrue() throws {
        let frames = try Self.frames(of: Self.puncta())
        let parameters = try Self.estimate(otf: IdealOTF(na: Self.na, emissionNm: Self.emissionNm), frames: frames)
        for angle in parameters.angles {
            for p in 1..<3 {
                var step = (angle.phases[p] - angle.phases[p - 1]) * 180 / .pi
                step = step - 360 * (step / 360).rounded(.down)
                #expect(abs(step - 120) < 0.5, "phase step \(step)° in \(angle.phases)")
            }
        }
    }

    /// The first orientation's frames, a reconstructor for them and the true wave vector (µm⁻¹).
    static func firstOrientation(of object: [Float]) throws -> (
        frames: ArraySlice<[Float]>, rec: SIM2DReconstructor, kx: Double, ky: Double
    ) {
        let frames = try Self.frames(of: object)
        let rec = try SIM2DReconstructor(
            width: side, height: side, pixelUm: pixelUm, angles: 3, phases: 3,
            otf: IdealOTF(na: na, emissionNm: emissionNm), options: SIM2DOptions())
        let fieldUm = Double(side) * pixelUm
        return (frames[0..<3], rec, Double(cycles[0].0) / fieldUm, Double(cycles[0].1) / fieldUm)
    }

    /// Started 0.2 spectral pixel and 12° away from the truth, the fit comes back to it.
    @Test func theFitFindsKAndThePhasesFromADisplacedStart() throws {
        let (frames, rec, kx, ky) = try Self.firstOrientation(of: Self.filaments())
        let pixel = 1 / (Double(Self.side) * Self.pixelUm)
        let truePhases = (0..<3).map { 2 * Double.pi * Double($0) / 3 + 0.7 }
        let start = [truePhases[0], truePhases[1] + 0.21, truePhases[2] - 0.21]
        let fit = rec.overlapFit(frames, kx: kx + 0.16 * pixel, ky: ky - 0.12 * pixel, phases: start)
        #expect(rec.spectralPixels(fit.kx - kx, fit.ky - ky) < 0.02, "k \(fit.kx), \(fit.ky) for \(kx), \(ky)")
        for p in 1..<3 {
            let stepError = (fit.phases[p] - fit.phases[0]) - (truePhases[p] - truePhases[0])
            #expect(abs(stepError) * 180 / .pi < 0.5, "phases \(fit.phases)")
        }
        #expect((fit.agreement ?? 0) > 0.95)
    }

    /// A correlation peak 1.2 spectral pixels off gives way to a fit started at the prior, where
    /// the bands agree; a right peak stands against a prior 1.2 pixels off.
    @Test func theStartWhoseBandsAgreeIsKept() throws {
        let (frames, rec, kx, ky) = try Self.firstOrientation(of: Self.filaments())
        let pixel = 1 / (Double(Self.side) * Self.pixelUm)
        let equidistant = (0..<3).map { 2 * Double.pi * Double($0) / 3 }
        let truth = PatternPrior(kx: kx, ky: ky, phases: equidistant, modulation: 0.7)
        let falsePeak = try rec.refine(
            frames, kx: kx + 1.2 * pixel, ky: ky, confidence: 7, source: "estimated")
        let kept = try rec.betterOfPeakAndPrior(frames, peak: falsePeak, prior: truth)
        #expect(rec.spectralPixels(kept.kx - kx, kept.ky - ky) < 0.02, "kept k \(kept.kx), \(kept.ky)")
        let rightPeak = try rec.refine(frames, kx: kx, ky: ky, confidence: 7, source: "estimated")
        let offPrior = PatternPrior(kx: kx + 1.2 * pixel, ky: ky, phases: equidistant, modulation: 0.7)
        let stands = try rec.betterOfPeakAndPrior(frames, peak: rightPeak, prior: offPrior)
        #expect(rec.spectralPixels(stands.kx - kx, stands.ky - ky) < 0.02, "kept k \(stands.kx), \(stands.ky)")
    }
}
