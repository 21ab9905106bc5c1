import Foundation
import MoireCore
import MoireFFT
import MoireReconstruction
import MoireSimulation
import Testing

/// The modulation depth of the pattern, measured on frames that a camera integrates over its
/// square pixels. Band +1 is recorded at f + k, band 0 at f: the pixels weaken band +1 more, and
/// an estimator that leaves them out reads the modulation low, the more so the steeper the
/// object's spectrum (filaments) and the nearer |k| is to the cutoff.
@Suite struct ModulationEstimateTests {
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

    /// Nine noise-free frames of random filaments (lines one fine pixel wide): the pattern
    /// `1 + m·cos(2πk·r + φ)` on the fine grid, the ideal OTF, then each camera pixel the sum of
    /// its fine pixels.
    static func frames() throws -> [[Float]] {
        let n = side * fine
        let fineUm = pixelUm / Double(fine)
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
                let peak = frame.max()!
                frames.append(frame.map { 1000 * $0 / peak })
            }
        }
        return frames
    }

    static func estimatedModulations(otf: RadialOTF, frames: [[Float]]) throws -> [Double] {
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
        return parameters.angles.map(\.modulation)
    }

    @Test func theModulationOfPixelIntegratedFramesIsReadTrue() throws {
        let frames = try Self.frames()
        let ideal = IdealOTF(na: Self.na, emissionNm: Self.emissionNm)
        let corrected = try Self.estimatedModulations(otf: ideal, frames: frames)
        for m in corrected {
            #expect(abs(m - Self.modulation) / Self.modulation < 0.02, "modulation \(m) for \(Self.modulation)")
        }
        // The same frames with the pixels taken as part of the OTF: the estimate reads low.
        let uncorrected = try Self.estimatedModulations(otf: PixelsIncludedOTF(ideal: ideal), frames: frames)
        for (m, low) in zip(corrected, uncorrected) {
            #expect(low < m - 0.02 * Self.modulation, "without the pixels' transfer \(low), with it \(m)")
        }
    }
}
