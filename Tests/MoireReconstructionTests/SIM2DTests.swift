import Foundation
import MoireConfig
import MoireCore
import MoireFFT
import MoireHardware
import MoireReconstruction
import MoireStorage
import MoireCore
import MoireTesting
import Testing

func orientationError(_ a: Double, _ b: Double) -> Double {
    var d = abs(a - b).truncatingRemainder(dividingBy: 180)
    if d > 90 { d = 180 - d }
    return d
}

func truthAngle(_ p: PatternSpec) -> Double {
    SIMAngleParameters(kx: p.kx, ky: p.ky, phases: [], modulation: 0, confidence: 0, source: "", flagged: false).angleDeg
}

func reconstructor(_ d: SimulatedSIMData, roi: Int) throws -> SIM2DReconstructor {
    var o = SIM2DOptions()
    o.background = d.offsetADU
    return try SIM2DReconstructor(width: roi, height: roi, pixelUm: d.pixelUm, angles: 3, phases: 3,
                                  otf: IdealOTF(na: 1.49, emissionNm: 525), options: o)
}

@Suite(.serialized) struct SIM2DSimulatedTests {
    @Test func highSignalEstimateMatchesTheSimulatorsTruth() throws {
        let d = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20)
        let rec = try reconstructor(d, roi: 256)
        let p = try rec.estimate(d.sets[0], priors: PatternPrior.from(d.nominal, angles: 3, phases: 3))
        for (a, ap) in p.angles.enumerated() {
            let t = d.truth[a]
            let tk = (t.kx * t.kx + t.ky * t.ky).squareRoot()
            #expect(!ap.flagged && ap.source == "estimated")
            #expect(abs(ap.kMagnitude - tk) / tk < 0.002, "|k| \(ap.kMagnitude) vs \(tk)")
            #expect(orientationError(ap.angleDeg, truthAngle(t)) < 0.05, "angle \(ap.angleDeg) vs \(truthAngle(t))")
            #expect(abs(ap.modulation - t.modulation) / t.modulation < 0.1, "m \(ap.modulation) vs \(t.modulation)")
            // Phase steps: the projected patterns step by exactly 2π/3.
            for i in 1..<3 { #expect(abs(ap.phases[i] - ap.phases[i - 1] - 2 * .pi / 3) < 0.1) }
        }
        // The estimate really moved from the nominal (pattern error 0.4 %, 0.3°) to the truth.
        let nominal = PatternPrior.from(d.nominal, angles: 3, phases: 3)
        #expect(orientationError(p.angles[0].angleDeg, atan2(nominal[0].ky, nominal[0].kx) * 180 / .pi) > 0.2)
    }

    @Test func srResolutionByFRCIsAtLeast1point7TimesFinerThanWidefield() throws {
        let a = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20, seed: 11)
        let b = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20, seed: 12)
        let rec = try reconstructor(a, roi: 256)
        let p = try rec.estimate(a.sets[0], priors: PatternPrior.from(a.nominal, angles: 3, phases: 3))
        let srA = try rec.reconstruct(a.sets[0], parameters: p), srB = try rec.reconstruct(b.sets[0], parameters: p)
        let wfA = try rec.widefield(a.sets[0]), wfB = try rec.widefield(b.sets[0])
        let resSR = try FRC.resolution(srA, srB, width: 512, height: 512, pixelUm: a.pixelUm / 2)
        let resWF = try FRC.resolution(wfA, wfB, width: 256, height: 256, pixelUm: a.pixelUm)
        #expect(resWF / resSR >= 1.7, "FRC resolution: widefield \(resWF) µm, SR \(resSR) µm")
    }

    @Test func theWholeFieldIsKeptNoDarkBorder() throws {
        // The transforms run on a mirrored, faded border around the frame: the SR frame's outer rows
        // and columns keep the brightness the widefield image has there (a faded frame would lose it).
        let d = try Fixtures.simulateSIM(roi: 128, powerMw: 100, exposureMs: 20, seed: 5)
        let rec = try reconstructor(d, roi: 128)
        let p = try rec.estimate(d.sets[0], priors: PatternPrior.from(d.nominal, angles: 3, phases: 3))
        let sr = try rec.reconstruct(d.sets[0], parameters: p)
        let wf = try rec.widefield(d.sets[0])
        /// Mean over the band of `width` pixels along the edges of a `side`² image, and over the rest.
        func borderAndInterior(_ image: [Float], side: Int, width: Int) -> (border: Double, interior: Double) {
            var border = 0.0, interior = 0.0, nb = 0.0, ni = 0.0
            for y in 0..<side {
                for x in 0..<side {
                    let edge = min(x, y, side - 1 - x, side - 1 - y) < width
                    if edge { border += Double(image[y * side + x]); nb += 1 } else { interior += Double(image[y * side + x]); ni += 1 }
                }
            }
            return (border / nb, interior / ni)
        }
        let srMeans = borderAndInterior(sr, side: 256, width: 8)
        let wfMeans = borderAndInterior(wf, side: 128, width: 4)
        let srRatio = srMeans.border / srMeans.interior
        let wfRatio = wfMeans.border / wfMeans.interior
        #expect(abs(srRatio / wfRatio - 1) < 0.1, "border/interior: SR \(srRatio), widefield \(wfRatio)")
    }

    @Test func lowSignalEstimateIsAccurateOrFlaggedAndReplacedByThePrior() throws {
        // About 30 photons at the brightest pixel.
        let d = try Fixtures.simulateSIM(roi: 256, powerMw: 5, exposureMs: 0.8)
        let brightest = d.sets[0].map { $0.max()! }.max()!
        let cam = d.proto.rig.cameraProfile
        let photons = (Double(brightest) - cam.offsetADU) / cam.gainADUPerE / cam.qe
        #expect(photons > 15 && photons < 60, "brightest pixel \(photons) photons")
        let rec = try reconstructor(d, roi: 256)
        let priors = PatternPrior.from(d.nominal, angles: 3, phases: 3)
        let p = try rec.estimate(d.sets[0], priors: priors)
        for (a, ap) in p.angles.enumerated() {
            let t = d.truth[a]
            let tk = (t.kx * t.kx + t.ky * t.ky).squareRoot()
            if ap.flagged {
                #expect(ap.source == "prior" && ap.reason != nil)
                #expect(abs(abs(ap.kx) - abs(priors[a].kx)) < 1e-12 && abs(abs(ap.ky) - abs(priors[a].ky)) < 1e-12)
            } else {
                #expect(abs(ap.kMagnitude - tk) / tk < 0.005)
                #expect(orientationError(ap.angleDeg, truthAngle(t)) < 0.2)
            }
        }
    }

    @Test func hopelessSignalIsFlaggedAndThePriorUsed() throws {
        let d = try Fixtures.simulateSIM(roi: 128, powerMw: 0.5, exposureMs: 0.5)
        let rec = try reconstructor(d, roi: 128)
        let priors = PatternPrior.from(d.nominal, angles: 3, phases: 3)
        let p = try rec.estimate(d.sets[0], priors: priors)
        #expect(p.flagged)
        for (a, ap) in p.angles.enumerated() where ap.flagged {
            #expect(ap.source == "prior" && ap.modulation == priors[a].modulation)
            #expect(ap.reason?.isEmpty == false)
        }
        // Still a finite image, never garbage numbers.
        let sr = try rec.reconstruct(d.sets[0], parameters: p)
        #expect(sr.allSatisfy { $0.isFinite })
    }

    @Test func blindSearchFindsThePatternWithoutAPrior() throws {
        let d = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20)
        let rec = try reconstructor(d, roi: 256)
        let p = try rec.estimate(d.sets[0], priors: nil)
        for (a, ap) in p.angles.enumerated() {
            let t = d.truth[a]
            #expect(abs(ap.kMagnitude - (t.kx * t.kx + t.ky * t.ky).squareRoot()) < 0.01)
            #expect(orientationError(ap.angleDeg, truthAngle(t)) < 0.1)
        }
    }
}

@Suite struct SIM2DInputTests {
    let otf = IdealOTF(na: 1.49, emissionNm: 525)

    @Test func wrongFrameCountBlankAndNaNFramesAreRejected() throws {
        let rec = try SIM2DReconstructor(width: 32, height: 32, pixelUm: 0.065, angles: 3, phases: 3, otf: otf)
        let good = (0..<9).map { i in (0..<1024).map { Float(($0 * 7 + i) % 13) } }
        #expect(throws: MoireError.self) { try rec.estimate(Array(good.prefix(8)), priors: nil) }
        var blank = good; blank[4] = [Float](repeating: 100, count: 1024)
        do { _ = try rec.reconstruct(blank, parameters: .fromPriors(PatternPrior.regular(periodUm: 0.18, firstAngleDeg: 0, angles: 3, phases: 3)))
            Issue.record("blank frame accepted") } catch let e as MoireError { #expect(e.message.contains("frame 4 is blank")) }
        var nan = good; nan[2][5] = .nan
        #expect(throws: MoireError.self) { try rec.widefield(nan) }
        // The reconstruction checks the values tile by tile as it separates the bands: the last
        // pixel of the eighth frame counts too.
        var lastNaN = good; lastNaN[7][1023] = .infinity
        do { _ = try rec.reconstruct(lastNaN, parameters: .fromPriors(PatternPrior.regular(periodUm: 0.18, firstAngleDeg: 0, angles: 3, phases: 3)))
            Issue.record("infinite value accepted") } catch let e as MoireError { #expect(e.message.contains("frame 7 contains NaN or infinite values")) }
        #expect(throws: MoireError.self) { try SIM2DReconstructor(width: 15, height: 32, pixelUm: 0.065, angles: 3, phases: 3, otf: otf) }
    }

    @Test func idealOTFHasTheAnalyticShape() {
        let o = IdealOTF(na: 1.4, emissionNm: 500)
        #expect(abs(o.cutoff - 5.6) < 1e-12)
        #expect(o.value(0) == 1 && o.value(5.6) == 0 && o.value(7) == 0)
        #expect(abs(o.value(2.8) - 0.391002) < 1e-5)
    }

    @Test func measuredRadialOTFFromTheRealData() throws {
        guard let data = Fixtures.sharedData else { return }
        let m = try MeasuredRadialOTF.loadMRC("\(data)/rdl-sim-microtubules/otf-tirf488-radial.mrc")
        #expect(abs(m.step - 0.0312) < 1e-4 && m.value(0) == 1)
        #expect(m.value(1) > m.value(2) && m.value(2) > m.value(4))
        #expect(m.cutoff > 4 && m.cutoff < 8)
    }
}

@Suite struct SIM2DRealDataTests {
    @Test func microtubulesGiveThreeOrientations60DegreesApartAndNoResidualOrderPeaks() throws {
        guard let data = Fixtures.sharedData else { Issue.record("../shared/data is needed"); return }
        let s = try ImageImport.loadMRC("\(data)/rdl-sim-microtubules/raw-3x3-microtubules.mrc")
        let otf = try MeasuredRadialOTF.loadMRC("\(data)/rdl-sim-microtubules/otf-tirf488-radial.mrc")
        var o = SIM2DOptions()
        o.background = 100
        o.wiener = .adaptive
        let rec = try SIM2DReconstructor(width: 256, height: 256, pixelUm: 0.0626, angles: 3, phases: 3, otf: otf, options: o)
        let p = try rec.estimate(s.planes, periodUm: 0.1807)
        let angles = p.angles.map(\.angleDeg)
        for i in 0..<3 { for j in (i + 1)..<3 {
            #expect(abs(orientationError(angles[i], angles[j]) - 60) < 1, "orientations \(angles)")
        } }
        for ap in p.angles { #expect(abs(ap.kMagnitude - 5.53) / 5.53 < 0.03) }
        // The SR spectrum at each order position: no peak over its neighbourhood.
        let sr = try rec.reconstruct(s.planes, parameters: p)
        let N = 512, px = 0.0626 / 2
        for ap in p.angles {
            let r = OrderPeaks.ratio(sr, width: N, height: N, pixelUm: px, kx: ap.kx, ky: ap.ky)
            #expect(r < 2.5, "order peak \(r) at angle \(ap.angleDeg)")
        }
        // No orientation dominates the extended spectrum (beyond the OTF cutoff, along each k),
        // relative to what the widefield image holds along the same direction within the cutoff —
        // although one orientation's estimate is flagged and another's modulation is weak.
        let wf = try rec.widefield(s.planes)
        let fc = otf.cutoff
        let srSectors = try sectorPower(sr, side: N, pixelUm: px, angles: p.angles.map(\.angleDeg), band: (1.05 * fc)...(1.9 * fc))
        let wfSectors = try sectorPower(wf, side: 256, pixelUm: 0.0626, angles: p.angles.map(\.angleDeg), band: (0.6 * fc)...(0.9 * fc))
        let balance = zip(srSectors, wfSectors).map { $0 / $1 }
        #expect(balance.max()! / balance.min()! < 1.5, "extended spectrum per orientation relative to widefield: \(balance) sr \(srSectors) wf \(wfSectors) fc \(fc)")
    }

    /// Mean spectral power of a square image within ±15° of each direction (degrees) and the radial
    /// band (cycles/µm); the image is Hann-windowed so its edges add no streaks to the spectrum.
    func sectorPower(_ image: [Float], side: Int, pixelUm: Double, angles: [Double], band: ClosedRange<Double>) throws -> [Double] {
        let plan = try FFT.plan2D(width: side, height: side, kind: .c2cForward)
        let input = AlignedBuffer<Complex32>(count: side * side), output = AlignedBuffer<Complex32>(count: side * side)
        let mean = image.reduce(0, +) / Float(image.count)
        let hann = (0..<side).map { Float(0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(side))) }
        for i in 0..<image.count { input[i] = Complex32((image[i] - mean) * hann[i % side] * hann[i / side], 0) }
        plan.execute(input.pointer, output.pointer)
        var sums = [Double](repeating: 0, count: angles.count), counts = [Double](repeating: 0, count: angles.count)
        for v in 0..<side { for u in 0..<side {
            let fu = Double(u < side / 2 ? u : u - side) / (Double(side) * pixelUm)
            let fv = Double(v < side / 2 ? v : v - side) / (Double(side) * pixelUm)
            guard band.contains(hypot(fu, fv)) else { continue }
            var direction = atan2(fv, fu) * 180 / .pi
            if direction < 0 { direction += 180 }
            for (a, angle) in angles.enumerated() where orientationError(direction, angle) < 15 {
                let c = output[v * side + u]
                sums[a] += Double(c.re * c.re + c.im * c.im)
                counts[a] += 1
            }
        } }
        return zip(sums, counts).map { $0 / max($1, 1) }
    }
}

@Suite struct OTFFileTests {
    @Test func twoDimensionalOTFImageIsRadiallyAveragedToTheIdealShape() throws {
        // A 2D OTF image (centred) of the ideal OTF, written as a float TIFF, read back and averaged.
        let dir = NSTemporaryDirectory() + "otf2d-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ideal = IdealOTF(na: 1.4, emissionNm: 500), n = 128, step = 0.1
        let layout = RecordingLayout(run: "otf", name: "otf", mode: "otf", channels: ["otf"], excitationNm: [], emissionNm: [],
                                     timepoints: 1, zPlanes: 1, angles: 1, phases: 1, width: n, height: n, pixel: .float32,
                                     pixelSizeUm: 1, zStepUm: 0, objectiveNA: 1.4, magnification: 1, protocolFile: "", rigFile: "")
        let w = try OMETiffWriter(path: "\(dir)/otf.tif", layout: layout)
        let img: [Float] = (0..<(n * n)).map { i in Float(ideal.value(hypot(Double(i % n - n / 2), Double(i / n - n / 2)) * step)) }
        let h = FrameHeader(run: "otf", seq: 0, index: 0, t: 0, channel: "otf", c: 0, angle: 0, phase: 0, z: 0, width: n, height: n,
                            pixel: .float32, pixelSizeUm: 1)
        try img.withUnsafeBytes { try w.write(header: h, payload: $0) }
        try w.finish()
        let m = try MeasuredRadialOTF.load("\(dir)/otf.tif", step: step)
        for f in stride(from: 0.0, to: 5.6, by: 0.7) { #expect(abs(m.value(f) - ideal.value(f)) < 0.03, "f \(f)") }
        #expect(abs(m.cutoff - ideal.cutoff) < 0.3)
        #expect(throws: MoireError.self) { try MeasuredRadialOTF.load("\(dir)/otf.tif") }  // no step given
    }
}
