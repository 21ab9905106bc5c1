import Foundation
import MoireConfig
import MoireHardware
import MoireReconstruction
import MoireTesting
import Testing

@Suite struct ExploreSIM {
    @Test func explore() throws {
        let d = try Fixtures.simulateSIM(roi: 256, powerMw: 100, exposureMs: 20)
        let rec = try SIM2DReconstructor(width: 256, height: 256, pixelUm: d.pixelUm, angles: 3, phases: 3,
                                         otf: IdealOTF(na: 1.49, emissionNm: 525), options: { var o = SIM2DOptions(); o.background = d.offsetADU; return o }())
        let mx = d.sets[0][0].max()!
        print("max ADU", mx)
        let priors = PatternPrior.from(d.nominal, angles: 3, phases: 3)
        let p = try rec.estimate(d.sets[0], priors: priors)
        for (a, ap) in p.angles.enumerated() {
            let t = d.truth[a]
            print(String(format: "angle %d est k=(%.5f, %.5f) |k|=%.5f ang=%.3f m=%.3f conf=%.1f flagged=%@ %@ | truth k=(%.5f, %.5f) |k|=%.5f", a, ap.kx, ap.ky, ap.kMagnitude, ap.angleDeg, ap.modulation, ap.confidence, "\(ap.flagged)", ap.reason ?? "", t.kx, t.ky, (t.kx*t.kx+t.ky*t.ky).squareRoot()))
            print("  phases", ap.phases)
        }
        let sr = try rec.reconstruct(d.sets[0], parameters: p)
        let wf = try rec.widefield(d.sets[0])
        print("sr mean", sr.reduce(0, +) / Float(sr.count), "wf mean", wf.reduce(0, +) / Float(wf.count))
        let (w, h, px) = PNGWriter.panels([(512, 512, (0..<(512*512)).map { wf[($0 / 512 / 2) * 256 + ($0 % 512) / 2] }), (512, 512, sr)])
        try PNGWriter.encode(width: w, height: h, pixels: px).write(to: URL(fileURLWithPath: "/tmp/sim-explore.png"))
    }
}
