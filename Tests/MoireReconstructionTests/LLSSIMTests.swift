import Foundation
import MoireConfig
import MoireReconstruction
import MoireTesting
import Testing

@Suite(.serialized) struct LLSSIMTests {
    /// A weak pattern peak beside the object's strong low-frequency spectrum (one orientation, five
    /// phases, from the fidelity harness's independent numpy forward model): with a prior 0.2 % off
    /// in |k| and 0.15° in orientation, as a real modulator's nominal pattern is, the search finds
    /// the peak itself — not the search window's inner edge, where the object's spectrum rises —
    /// so the estimate is trusted, its |k| within 0.5 % and its modulation within 0.05 of the truth.
    @Test func aWeakPeakBesideTheObjectsSpectrumIsFound() throws {
        struct Truth: Decodable { var pixelUm, na, emissionNm, kx, ky, modulation, offset: Double }
        let dir = Fixtures.tempDir("llssim-weak")
        let rawPath = "\(dir)/raw.u16"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Fixtures.path("Tests/Data/llssim/weak_peak_scene.py"), rawPath]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let printed = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "the forward model (python3, numpy) failed")
        let truth = try JSONDecoder().decode(Truth.self, from: printed)
        let n = 128
        let words = try Data(contentsOf: URL(fileURLWithPath: rawPath))
        let values = words.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)).map { Float(UInt16(littleEndian: $0)) } }
        let frames = (0..<5).map { Array(values[($0 * n * n)..<(($0 + 1) * n * n)]) }
        var options = SIM2DOptions()
        options.background = truth.offset
        let rec = try SIM2DReconstructor(
            width: n, height: n, pixelUm: truth.pixelUm, angles: 1, phases: 5,
            otf: IdealOTF(na: truth.na, emissionNm: truth.emissionNm), options: options)
        let magnitude = hypot(truth.kx, truth.ky) * 1.002
        let orientation = atan2(truth.ky, truth.kx) + 0.15 * Double.pi / 180
        let prior = PatternPrior(
            kx: magnitude * cos(orientation), ky: magnitude * sin(orientation),
            phases: (0..<5).map { 2 * Double.pi * Double($0) / 5 }, modulation: 0.7)
        let found = try #require(try rec.estimate(frames, priors: [prior]).angles.first)
        let error = abs(hypot(found.kx, found.ky) - hypot(truth.kx, truth.ky)) / hypot(truth.kx, truth.ky)
        #expect(!found.flagged && found.source == "estimated", "\(found.reason ?? "")")
        #expect(error < 0.005, "|k| \(error * 100) % from the truth")
        #expect(abs(found.modulation - truth.modulation) < 0.05, "modulation \(found.modulation), truth \(truth.modulation)")
    }

    /// One orientation, three phases: the resolution gain is along the pattern's wave vector only.
    @Test func singleOrientationGainsResolutionAlongThePatternAxisOnly() throws {
        let a = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20, seed: 21, mode: "llssim")
        let b = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20, seed: 22, mode: "llssim")
        #expect(a.sets[0].count == 3)
        var o = SIM2DOptions()
        o.background = a.offsetADU
        let rec = try SIM2DReconstructor(width: 256, height: 256, pixelUm: a.pixelUm, angles: 1, phases: 3,
                                         otf: IdealOTF(na: 1.49, emissionNm: 525), options: o)
        let p = try rec.estimate(a.sets[0], priors: PatternPrior.from(a.nominal, angles: 1, phases: 3))
        let t = a.truth[0]
        #expect(!p.angles[0].flagged)
        #expect(abs(p.angles[0].kMagnitude - (t.kx * t.kx + t.ky * t.ky).squareRoot()) / 5.55 < 0.002)
        let srA = try rec.reconstruct(a.sets[0], parameters: p), srB = try rec.reconstruct(b.sets[0], parameters: p)
        // The SNR-adaptive filter applies with one orientation too: it found its noise and signal.
        #expect(rec.lastSpectralModel != nil)
        let wfA = try rec.widefield(a.sets[0]), wfB = try rec.widefield(b.sets[0])
        let along = atan2(t.ky, t.kx) * 180 / .pi, across = along + 90
        func gain(_ dir: Double) throws -> Double {
            try FRC.resolution(wfA, wfB, width: 256, height: 256, pixelUm: a.pixelUm, direction: dir)
                / FRC.resolution(srA, srB, width: 512, height: 512, pixelUm: a.pixelUm / 2, direction: dir)
        }
        let gAlong = try gain(along), gAcross = try gain(across)
        #expect(gAlong >= 1.5, "gain along k \(gAlong)")
        #expect(gAcross < 1.25, "gain across k \(gAcross)")
    }

    @Test func fivePhasesWorkTheSame() throws {
        let a = try Fixtures.simulateSIM(roi: 128, powerMw: 100, exposureMs: 20, seed: 31, mode: "llssim", phases: 5, patternSet: "sim488-3d")
        #expect(a.sets[0].count == 5)
        var o = SIM2DOptions()
        o.background = a.offsetADU
        let rec = try SIM2DReconstructor(width: 128, height: 128, pixelUm: a.pixelUm, angles: 1, phases: 5,
                                         otf: IdealOTF(na: 1.49, emissionNm: 525), options: o)
        let p = try rec.estimate(a.sets[0], priors: PatternPrior.from(a.nominal, angles: 1, phases: 5))
        let t = a.truth[0]
        #expect(!p.angles[0].flagged)
        #expect(abs(p.angles[0].kMagnitude - (t.kx * t.kx + t.ky * t.ky).squareRoot()) / (t.kx * t.kx + t.ky * t.ky).squareRoot() < 0.002)
        for i in 1..<5 { #expect(abs(p.angles[0].phases[i] - p.angles[0].phases[i - 1] - 2 * .pi / 5) < 0.1) }
        let sr = try rec.reconstruct(a.sets[0], parameters: p)
        #expect(sr.count == 256 * 256 && sr.allSatisfy { $0.isFinite })
    }
}
