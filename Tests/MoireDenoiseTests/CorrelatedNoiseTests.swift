import Foundation
import MoireConfig
import MoireCore
import MoireDenoise
import MoireTesting
import Testing

/// Real-camera noise: spatially correlated, 8-bit, clipped. The reference for the correlation is a
/// binomial blur of white noise ([1 2 1]/4 along x and y), whose correlation is known in closed form:
/// ρ(1,0) = 2/3, ρ(1,1) = 4/9, ρ(2,0) = 1/6, ρ(2,1) = 1/9, and whose variance is (6/16)² of the white noise's.
enum CorrelatedCamera {
    static let binomial: [Double] = [0.25, 0.5, 0.25]
    static let varianceFactor: Double = 0.140625  // (6/16)²

    static func expectedRho(_ dx: Int, _ dy: Int) -> Double {
        func along(_ d: Int) -> Double { abs(d) > 2 ? 0 : [1.0, 2.0 / 3, 1.0 / 6][abs(d)] }
        return along(dx) * along(dy)
    }

    /// Filters `field` with the separable binomial kernel, edges mirrored.
    static func blur(_ field: [Double], width: Int, height: Int) -> [Double] {
        func mirrored(_ i: Int, _ n: Int) -> Int { i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i) }
        var rows = [Double](repeating: 0, count: field.count)
        for y in 0..<height {
            for x in 0..<width {
                rows[y * width + x] = (-1...1).map { binomial[$0 + 1] * field[y * width + mirrored(x + $0, width)] }
                    .reduce(0, +)
            }
        }
        var out = rows
        for y in 0..<height {
            for x in 0..<width {
                out[y * width + x] = (-1...1).map { binomial[$0 + 1] * rows[mirrored(y + $0, height) * width + x] }
                    .reduce(0, +)
            }
        }
        return out
    }

    /// A specimen in photons: `ridges` ridges of Gaussian profile (variance `width²`/2) over a background, peak `peak`.
    static func specimen(
        size: Int, peak: Double, background: Double, ridges: Int = 12, width: Double = 1.7, seed: UInt64
    ) -> [Double] {
        var r = SeededRandom(seed: seed)
        var photons = [Double](repeating: 0, count: size * size)
        for _ in 0..<ridges {
            let cx = r.uniform() * Double(size)
            let cy = r.uniform() * Double(size)
            let angle = r.uniform() * .pi
            for y in 0..<size {
                for x in 0..<size {
                    let distance = abs(-sin(angle) * (Double(x) - cx) + cos(angle) * (Double(y) - cy))
                    photons[y * size + x] += exp(-distance * distance / (width * width))
                }
            }
        }
        let top = photons.max()!
        return photons.map { background + $0 / top * (peak - background) }
    }

    /// Frames of `photons` through a camera: Poisson (normal approximation above 30) and read noise
    /// in electrons, then the binomial blur of the noise when `correlated`, gain and offset, then
    /// rounding and clipping to `0...maximum` when `maximum` is given.
    static func frames(
        _ photons: [Double], size: Int, count: Int, gain: Double, offset: Double, readNoise: Double,
        correlated: Bool, maximum: Double? = nil, seed: UInt64
    ) -> [[Float]] {
        var r = SeededRandom(seed: seed)
        return (0..<count).map { _ in
            var noise = photons.map { lam -> Double in
                var k = 0.0
                if lam < 30 {
                    var p = r.uniform()
                    let l = exp(-lam)
                    while p > l {
                        k += 1
                        p *= r.uniform()
                    }
                } else {
                    k = (lam + lam.squareRoot() * r.normal()).rounded()
                }
                return k - lam + readNoise * r.normal()
            }
            if correlated {
                // Scaled back so the blurred noise keeps the variance of the white noise.
                noise = blur(noise, width: size, height: size).map { $0 / varianceFactor.squareRoot() }
            }
            return zip(photons, noise).map { lam, n in
                let value = offset + gain * (lam + n)
                guard let maximum else { return Float(value) }
                return Float(min(max(value.rounded(), 0), maximum))
            }
        }
    }

    /// The sample correlation of `field` at lag (dx, dy).
    static func sampleRho(_ field: [Double], width: Int, height: Int, _ dx: Int, _ dy: Int) -> Double {
        let mean = field.reduce(0, +) / Double(field.count)
        var product = 0.0
        var pairs = 0
        for y in 0..<(height - abs(dy)) {
            for x in max(0, -dx)..<min(width, width - dx) {
                product += (field[y * width + x] - mean) * (field[(y + dy) * width + x + dx] - mean)
                pairs += 1
            }
        }
        let variance = field.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(field.count)
        return product / Double(pairs) / variance
    }
}

@Suite struct NoiseCorrelationTests {
    /// What `moire denoise --noise auto` prints for a camera profile, pasted into one, gives the
    /// camera's noise model that correlation (to the two decimals printed); a profile without it
    /// gives pixel-independent noise.
    @Test func theProfileLinesPrintedGiveTheCameraModelItsCorrelation() throws {
        let measured = NoiseCorrelation(
            halfPlane: NoiseCorrelation.halfPlaneLags.map { CorrelatedCamera.expectedRho($0.dx, $0.dy) })
        let dir = Fixtures.tempDir("noiseprofile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plain = Fixtures.path("sim-hardware/profiles/camera-sim-scmos.yaml")
        let text = try String(contentsOfFile: plain, encoding: .utf8)
        let stated = text.replacingOccurrences(
            of: "calibration:\n", with: "calibration:\n  \(measured.profileLines)\n")
        #expect(stated != text)
        let file = Fixtures.write(stated, to: "camera.yaml", in: dir)
        let model = NoiseModel(camera: try #require(try DeviceProfile.load(file: file).camera))
        let correlation = try #require(model.correlation)
        for lag in NoiseCorrelation.halfPlaneLags {
            #expect(abs(correlation.rho(lag.dx, lag.dy) - measured.rho(lag.dx, lag.dy)) <= 0.005 + 1e-9, "lag \(lag)")
        }
        #expect(abs(correlation.kernel.map { Double($0 * $0) }.reduce(0, +) - 1) < 1e-5)
        #expect(NoiseModel(camera: try #require(try DeviceProfile.load(file: plain).camera)).correlation == nil)
    }

    @Test func theKernelSynthesisesNoiseWithTheCorrelationItWasBuiltFrom() {
        let lags = NoiseCorrelation.halfPlaneLags
        let model = NoiseCorrelation(halfPlane: lags.map { CorrelatedCamera.expectedRho($0.dx, $0.dy) })
        let kernelEnergy = model.kernel.map { Double($0 * $0) }.reduce(0, +)
        #expect(abs(kernelEnergy - 1) < 1e-5)
        var r = SeededRandom(seed: 11)
        let size = 256
        let white = (0..<(size * size)).map { _ in Float(r.normal()) }
        let synthesised = model.filter(white, width: size, height: size).map(Double.init)
        let variance = synthesised.map { $0 * $0 }.reduce(0, +) / Double(synthesised.count)
        #expect(abs(variance - 1) < 0.05, "variance \(variance)")
        for lag in lags {
            let measured = CorrelatedCamera.sampleRho(synthesised, width: size, height: size, lag.dx, lag.dy)
            let expected = CorrelatedCamera.expectedRho(lag.dx, lag.dy)
            #expect(abs(measured - expected) < 0.03, "lag \(lag): \(measured) against \(expected)")
        }
        // A 3×3 mean of this noise varies (1/9)·Σρ(p − q) times more than independent pixels'.
        // For the binomial blur: (3 + 4·2/3 + 2·1/6)² / 9 = 4.
        #expect(abs(model.boxMean3VarianceFactor - 4) < 1e-6, "\(model.boxMean3VarianceFactor)")
        #expect(model.isSignificant)
    }

    @Test func correlatedRecorruptionGivesPairsWhoseNoisesAreUncorrelated() throws {
        // The frame: a constant 400 ADU with binomially correlated noise; ŷ − x and ỹ − x must not
        // covary at any lag when the added noise has the frame's own correlation, and do when it has none.
        let size = 192
        let photons = [Double](repeating: 200, count: size * size)
        let frames = CorrelatedCamera.frames(
            photons, size: size, count: 1, gain: 2, offset: 0, readNoise: 2, correlated: true, seed: 5)
        let clean = photons.map { 2 * $0 }
        let variance = 2 * 2 * (200 + 4.0)
        let lags = NoiseCorrelation.halfPlaneLags
        let correlation = NoiseCorrelation(halfPlane: lags.map { CorrelatedCamera.expectedRho($0.dx, $0.dy) })
        func crossCovariance(_ model: NoiseModel, dx: Int) -> Double {
            var r = SeededRandom(seed: 9)
            let (input, target) = Recorruption.pair(frames[0], width: size, model: model, rng: &r)
            var sum = 0.0
            var count = 0
            for y in 0..<size {
                for x in 0..<(size - dx) {
                    let a = Double(input[y * size + x]) - clean[y * size + x]
                    let b = Double(target[y * size + x + dx]) - clean[y * size + x + dx]
                    sum += a * b
                    count += 1
                }
            }
            return sum / Double(count) / variance
        }
        let matched = NoiseModel(offset: 0, gain: 2, readVariance: 16, correlation: correlation)
        let independent = NoiseModel(offset: 0, gain: 2, readVariance: 16)
        for dx in 0...2 {
            let covariance = crossCovariance(matched, dx: dx)
            #expect(abs(covariance) < 0.06, "matched, lag \(dx): \(covariance)")
        }
        let leftOver = crossCovariance(independent, dx: 1)
        #expect(leftOver > 0.5, "pixel-independent recorruption leaves ρ(1,0) in the pair: \(leftOver)")
    }
}

@Suite struct RealCameraNoiseEstimationTests {
    static let size = 192

    @Test func frameDifferencesGiveGainReadNoiseAndCorrelationOfACorrelatedCamera() throws {
        let photons = CorrelatedCamera.specimen(size: Self.size, peak: 120, background: 4, seed: 21)
        let frames = CorrelatedCamera.frames(
            photons, size: Self.size, count: 4, gain: 1.5, offset: 100, readNoise: 3, correlated: true, seed: 22)
        let estimate = try NoiseEstimation.estimate(frames: frames, width: Self.size, height: Self.size)
        #expect(estimate.method == .frameDifferences)
        #expect(estimate.framePairs == 3)
        let m = estimate.model
        // variance = 1.5²·(photons + 9) = 1.5·(ADU − 100) + 20.25
        #expect(abs(m.gain - 1.5) / 1.5 < 0.12, "gain \(m.gain)")
        #expect(abs(m.variance(at: 100) - 20.25) < 8, "read variance at the offset \(m.variance(at: 100))")
        let correlation = try #require(m.correlation)
        for (dx, dy) in [(1, 0), (0, 1), (1, 1), (2, 0), (0, 2)] {
            #expect(
                abs(correlation.rho(dx, dy) - CorrelatedCamera.expectedRho(dx, dy)) < 0.05,
                "ρ(\(dx),\(dy)) \(correlation.rho(dx, dy))")
        }
    }

    @Test func independentNoiseIsFoundIndependent() throws {
        // Frame differences on a textured specimen; a single frame on a sparse one (one frame's texture
        // at the scale of a pixel reads as correlation: docs/denoising.md).
        let photons = CorrelatedCamera.specimen(size: Self.size, peak: 120, background: 4, seed: 23)
        let frames = CorrelatedCamera.frames(
            photons, size: Self.size, count: 3, gain: 1.5, offset: 100, readNoise: 3, correlated: false, seed: 24)
        let fromDifferences = try NoiseEstimation.estimate(frames: frames, width: Self.size, height: Self.size)
        #expect(fromDifferences.model.correlation == nil)
        #expect(abs(fromDifferences.model.gain - 1.5) / 1.5 < 0.12, "gain \(fromDifferences.model.gain)")
        let sparse = CorrelatedCamera.specimen(size: Self.size, peak: 120, background: 4, ridges: 3, seed: 23)
        let sparseFrame = CorrelatedCamera.frames(
            sparse, size: Self.size, count: 1, gain: 1.5, offset: 100, readNoise: 3, correlated: false, seed: 24)
        let single = try NoiseEstimation.estimate(frames: sparseFrame, width: Self.size, height: Self.size)
        #expect(single.method == .singleFrame)
        #expect(single.model.correlation == nil)
    }

    @Test func aSingleTexturedFrameOfIndependentNoiseIsFoundIndependent() throws {
        // A cell filling two thirds of the frame, textured at the scale of a pixel (thin ridges, which
        // raise the apparent correlation of its blocks), on a plain background: the noise is
        // independent, and the dark groups of blocks, which the texture does not reach, say so.
        let ridges = CorrelatedCamera.specimen(
            size: Self.size, peak: 300, background: 6, ridges: 40, width: 0.8, seed: 29)
        let centre = Double(Self.size) / 2
        let photons = ridges.enumerated().map { i, value in
            let (y, x) = i.quotientAndRemainder(dividingBy: Self.size)
            let inside = hypot(Double(x) - centre, Double(y) - centre) < 0.46 * Double(Self.size)
            return inside ? value + 20 : 6
        }
        let frame = CorrelatedCamera.frames(
            photons, size: Self.size, count: 1, gain: 1.5, offset: 100, readNoise: 3, correlated: false, seed: 30)
        let estimate = try NoiseEstimation.estimate(frames: frame, width: Self.size, height: Self.size)
        #expect(estimate.method == .singleFrame)
        #expect(estimate.model.correlation == nil, "\(String(describing: estimate.model.correlation))")
    }

    @Test func aSingleFrameOfStronglyCorrelatedNoiseShowsItsCorrelation() throws {
        let photons = CorrelatedCamera.specimen(
            size: Self.size, peak: 120, background: 4, ridges: 3, width: 3, seed: 25)
        let frames = CorrelatedCamera.frames(
            photons, size: Self.size, count: 1, gain: 1.5, offset: 100, readNoise: 3, correlated: true, seed: 26)
        let m = try NoiseEstimation.estimate(frames[0], width: Self.size, height: Self.size)
        let correlation = try #require(m.correlation)
        #expect(abs(correlation.rho(1, 0) - 2.0 / 3) < 0.12, "ρ(1,0) \(correlation.rho(1, 0))")
        // The adjacent-difference variance corrected by ρ₁ gives the background's variance,
        // 1.5²·(4 + 9) ADU² at 106 ADU. (The gain is not asserted: structure at the scale of the
        // correlation enters a single frame's brighter blocks three times as strongly as independent
        // noise's when ρ₁ = 2/3; time-lapses and stacks measure it from frame differences.)
        let background = m.variance(at: 106)
        #expect(abs(background - 29.25) / 29.25 < 0.2, "variance of the background \(background)")
    }

    @Test func clippedEightBitFramesStillGiveTheirNoise() throws {
        // 8-bit, the offset 2 ADU under a background of 3 photons: a few per cent of the dark pixels
        // read 0; the brightest ridges saturate at 255. Clipped pixels are left out; the gain still comes out right.
        let photons = CorrelatedCamera.specimen(
            size: Self.size, peak: 110, background: 3, ridges: 10, width: 6, seed: 27)
        let frames = CorrelatedCamera.frames(
            photons, size: Self.size, count: 4, gain: 2.6, offset: 2, readNoise: 1, correlated: false, maximum: 255,
            seed: 28)
        let zeros = frames[0].filter { $0 == 0 }.count
        let saturated = frames[0].filter { $0 == 255 }.count
        #expect(zeros > Self.size * Self.size / 200, "the test's frames are clipped at 0")
        #expect(saturated > 10, "the test's frames saturate")
        let estimate = try NoiseEstimation.estimate(frames: frames, width: Self.size, height: Self.size)
        #expect(estimate.clippedFraction > 0.01)
        #expect(abs(estimate.model.gain - 2.6) / 2.6 < 0.15, "gain \(estimate.model.gain)")
        #expect(estimate.model.correlation == nil)
    }
}

@Suite(.serialized) struct CorrelatedDenoisingTests {
    /// The evidence for recorrupting with the noise's own correlation (docs/denoising.md): on a frame
    /// with binomially correlated noise, the same training from scratch with pixel-independent pairs
    /// keeps the correlated part of the noise (its target still carries it); with matched pairs the
    /// network removes it, and the result beats the best Gaussian filter.
    @Test func matchedCorrelationDenoisesCorrelatedNoiseWherePixelIndependentPairsDoNot() throws {
        let size = 96
        let photons = CorrelatedCamera.specimen(size: size, peak: 60, background: 3, ridges: 6, width: 2.5, seed: 31)
        let noisy = CorrelatedCamera.frames(
            photons, size: size, count: 1, gain: 1, offset: 100, readNoise: 1.5, correlated: true, seed: 32)[0]
        let truth = photons.map { Float(100 + $0) }
        let lags = NoiseCorrelation.halfPlaneLags
        let correlation = NoiseCorrelation(halfPlane: lags.map { CorrelatedCamera.expectedRho($0.dx, $0.dy) })
        let engine = try DNNLEngine()
        func denoised(_ model: NoiseModel) throws -> [Float] {
            let d = Denoiser(engine: engine, model: model, seed: 4)
            d.crop = 64
            d.batch = 2
            d.learningRate = 2e-3
            d.averaging = 0.99
            for _ in 0..<150 { try d.adapt(noisy, width: size, height: size) }
            return try d.denoise(noisy, width: size, height: size)
        }
        let matched = try denoised(NoiseModel(offset: 100, gain: 1, readVariance: 2.25, correlation: correlation))
        let independent = try denoised(NoiseModel(offset: 100, gain: 1, readVariance: 2.25))
        let psnrMatched = ImageMetrics.psnr(matched, truth: truth)
        let psnrIndependent = ImageMetrics.psnr(independent, truth: truth)
        let gaussian = ImageMetrics.bestGaussian(noisy, truth: truth, width: size).psnr
        #expect(psnrMatched > psnrIndependent + 1, "matched \(psnrMatched) dB, pixel-independent \(psnrIndependent) dB")
        #expect(psnrMatched > gaussian, "matched \(psnrMatched) dB, best Gaussian \(gaussian) dB")
    }
}
