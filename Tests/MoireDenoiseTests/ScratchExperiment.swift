import Foundation
import MoireCore
import MoireDenoise
import MoireTesting
import Testing

@Suite(.serialized) struct ScratchExperiment {
    @Test func compare() throws {
        guard ProcessInfo.processInfo.environment["MOIRE_SCRATCH"] != nil else { return }
        let d = try Fixtures.simulateWidefield(roi: 128, powerMw: 10, exposureMs: 0.5, count: Int(ProcessInfo.processInfo.environment["COUNT"] ?? "40")!)
        let last = d.frames.last!
        let raw = ImageMetrics.psnr(last, truth: d.truth)
        let g = ImageMetrics.bestGaussian(last, truth: d.truth, width: 128)
        var mean = [Float](repeating: 0, count: last.count)
        for f in d.frames { for i in 0..<f.count { mean[i] += f[i] / Float(d.frames.count) } }
        var mean4 = [Float](repeating: 0, count: last.count)
        for f in d.frames.suffix(4) { for i in 0..<f.count { mean4[i] += f[i] / 4 } }
        print("mean40 \(ImageMetrics.psnr(mean, truth: d.truth)) mean4 \(ImageMetrics.psnr(mean4, truth: d.truth)) g(mean40) \(ImageMetrics.bestGaussian(mean, truth: d.truth, width: 128).psnr)")
        print("raw \(raw) gauss \(g.psnr) sigma \(g.sigma)")
        let model = NoiseModel(offset: d.offset, gain: d.gain, readVariance: d.readVariance)
        let stepsPer = Int(ProcessInfo.processInfo.environment["STEPS"] ?? "20")!
        for mode in (ProcessInfo.processInfo.environment["MODES"] ?? "r2r1,pairs").split(separator: ",").map(String.init) {
            let den = Denoiser(engine: try DNNLEngine(), model: model, seed: 4)
            den.crop = 64; den.batch = 4; den.learningRate = 1e-3
            let env = ProcessInfo.processInfo.environment
            den.crop = Int(env["CROP"] ?? "64")!; den.batch = Int(env["BATCH"] ?? "4")!
            let decay = env["DECAY"] != nil
            let total = d.frames.count * stepsPer
            var n = 0
            var ema = den.net.parameters.map { $0.0.values }
            for (k, f) in d.frames.enumerated() {
                for _ in 0..<stepsPer {
                    n += 1
                    if decay { den.learningRate = Float(Double(env["LR"] ?? "1e-3")! * pow(0.05, Double(n) / Double(total))) }
                    defer { for (j, p) in den.net.parameters.enumerated() { for i in 0..<p.0.count { ema[j][i] = 0.99 * ema[j][i] + 0.01 * p.0[i] } } }
                    switch mode {
                    case "r2r1": try den.adapt(f, width: 128, height: 128)
                    case "r2r05": den.alpha = 0.5; try den.adapt(f, width: 128, height: 128)
                    default:
                        let other = d.frames[k % 2 == 0 ? k + 1 : k - 1]
                        try den.adapt(input: f, target: other, width: 128, height: 128)
                    }
                }
            }
            let out0 = try den.denoise(last, width: 128, height: 128)
            print(mode, "plain", ImageMetrics.psnr(out0, truth: d.truth))
            for (j, p) in den.net.parameters.enumerated() { for i in 0..<p.0.count { p.0[i] = ema[j][i] } }
            let out = try den.denoise(last, width: 128, height: 128)
            print(mode, "ema", ImageMetrics.psnr(out, truth: d.truth), ImageMetrics.ssim(out, truth: d.truth, width: 128), "gauss ssim", ImageMetrics.ssim(g.image, truth: d.truth, width: 128))
        }
    }
}
