import Foundation
import MoireCore
import MoireDenoise
import Testing

@Suite(.serialized) struct DeconvolutionTests {
    @Test func lossGradientMatchesFiniteDifferences() throws {
        var r = SeededRandom(seed: 3)
        // An asymmetric kernel, so that a wrong flip in the adjoint shows.
        let loss = try DeconvolutionLoss(psf: [0.05, 0.1, 0.02, 0.2, 0.3, 0.05, 0.1, 0.15, 0.03], size: 3, hessianWeight: 0.1)
        let b = 2, w = 9, h = 7, n = b * w * h
        var x = (0..<n).map { _ in Float(r.normal()) }
        let t = (0..<n).map { _ in Float(r.normal()) }
        var g = [Float](repeating: 0, count: n)
        _ = x.withUnsafeBufferPointer { xp in t.withUnsafeBufferPointer { tp in g.withUnsafeMutableBufferPointer { gp in
            loss.evaluate(xp.baseAddress!, target: tp.baseAddress!, batch: b, width: w, height: h, grad: gp.baseAddress!)
        } } }
        func value(_ x: [Float]) -> Double {
            var scratch = [Float](repeating: 0, count: n)
            return x.withUnsafeBufferPointer { xp in t.withUnsafeBufferPointer { tp in scratch.withUnsafeMutableBufferPointer { gp in
                loss.evaluate(xp.baseAddress!, target: tp.baseAddress!, batch: b, width: w, height: h, grad: gp.baseAddress!)
            } } }
        }
        let eps: Float = 1e-2
        for i in 0..<n {
            let v = x[i]
            x[i] = v + eps; let lp = value(x)
            x[i] = v - eps; let lm = value(x)
            x[i] = v
            let num = (lp - lm) / Double(2 * eps)
            #expect(abs(num - Double(g[i])) < 1e-3 + 1e-2 * abs(num), "element \(i): numeric \(num) analytic \(g[i])")
        }
    }

    @Test func theDataTermVanishesForTheObjectWhoseBlurIsTheTarget() throws {
        let loss = try DeconvolutionLoss.gaussian(sigmaPx: 1.2, hessianWeight: 0)
        let w = 24
        var obj = [Float](repeating: 0, count: w * w)
        obj[8 * w + 9] = 3; obj[15 * w + 14] = 1.5
        // The target: the object blurred by the same kernel, computed independently here.
        let r = loss.size / 2
        var target = [Float](repeating: 0, count: w * w)
        for y in 0..<w { for x in 0..<w where obj[y * w + x] != 0 {
            for ky in -r...r { for kx in -r...r { target[(y + ky) * w + x + kx] += obj[y * w + x] * loss.psf[(ky + r) * loss.size + kx + r] } }
        } }
        var g = [Float](repeating: 0, count: w * w)
        let l = obj.withUnsafeBufferPointer { o in target.withUnsafeBufferPointer { t in g.withUnsafeMutableBufferPointer { gp in
            loss.evaluate(o.baseAddress!, target: t.baseAddress!, batch: 1, width: w, height: w, grad: gp.baseAddress!)
        } } }
        #expect(l < 1e-12 && g.allSatisfy { abs($0) < 1e-6 })
        // The widefield model's width: σ = 0.21 λ/NA.
        let wf = try DeconvolutionLoss.widefield(na: 1.4, emissionNm: 520, pixelUm: 0.065)
        #expect(wf.size == 2 * Int((3 * 0.21 * 0.52 / 1.4 / 0.065).rounded(.up)) + 1)
        #expect(throws: MoireError.self) { _ = try DeconvolutionLoss(psf: [1, 1], size: 2) }
    }

    /// Beads blurred by a Gaussian PSF (σ 1.6 px) with Poisson–Gaussian noise: trained self-supervised
    /// with the deconvolution term, the output's beads are markedly narrower than the input's.
    @Test func deconvolutionTermSharpensBlurredBeads() throws {
        let size = 96, sigma = 1.6
        let model = NoiseModel(offset: 100, gain: 1, readVariance: 1)
        var r = SeededRandom(seed: 21)
        var beads: [(Double, Double)] = []
        while beads.count < 25 {
            let c = (6 + r.uniform() * Double(size - 12), 6 + r.uniform() * Double(size - 12))
            if beads.allSatisfy({ hypot($0.0 - c.0, $0.1 - c.1) > 9 }) { beads.append(c) }
        }
        var frames: [[Float]] = []
        var noise = SeededRandom(seed: 5)
        for _ in 0..<4 {
            var img = [Float](repeating: 0, count: size * size)
            for y in 0..<size { for x in 0..<size {
                var lam = 2.0
                for b in beads { let dx = Double(x) - b.0, dy = Double(y) - b.1; lam += 150 * exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) }
                let k = max(0, lam + lam.squareRoot() * noise.normal())  // Poisson by its normal limit at these counts
                img[y * size + x] = Float(model.offset + k.rounded() + noise.normal())
            } }
            frames.append(img)
        }
        /// Trained from scratch with or without the deconvolution term; the output for the first frame.
        func train(deconvolve: Bool) throws -> [Float] {
            let d = Denoiser(engine: try DNNLEngine(), model: model, seed: 2)
            d.crop = 96; d.batch = 1; d.learningRate = 3e-3; d.decay = (0.05, 300); d.averaging = 0.98
            if deconvolve { d.deconvolution = try DeconvolutionLoss.gaussian(sigmaPx: sigma, hessianWeight: 0.0005) }
            for s in 0..<300 { try d.adapt(frames[s % frames.count], width: size, height: size) }
            return try d.denoise(frames[0], width: size, height: size)
        }
        let out = try train(deconvolve: true), plain = try train(deconvolve: false)
        /// Each bead's FWHM from the area above half its height (over the median of the 9×9 window's border), averaged.
        func width(_ img: [Float]) -> Double {
            var total = 0.0
            for b in beads {
                let cx = Int(b.0.rounded()), cy = Int(b.1.rounded())
                var border: [Float] = [], inside: [Float] = []
                for y in (cy - 4)...(cy + 4) { for x in (cx - 4)...(cx + 4) {
                    let v = img[y * size + x]
                    if abs(x - cx) == 4 || abs(y - cy) == 4 { border.append(v) } else { inside.append(v) }
                } }
                let bg = border.sorted()[border.count / 2]
                var peak = -Float.infinity
                for y in (cy - 1)...(cy + 1) { for x in (cx - 1)...(cx + 1) { peak = max(peak, img[y * size + x]) } }
                let area = Double(inside.filter { $0 - bg > (peak - bg) / 2 }.count)
                total += 2 * (area / .pi).squareRoot()
            }
            return total / Double(beads.count)
        }
        let before = width(frames[0]), after = width(out), denoisedOnly = width(plain)
        print(String(format: "deconvolution: bead FWHM %.2f px raw, %.2f px denoised only, %.2f px with the deconvolution term (PSF σ %.1f px)",
                     before, denoisedOnly, after, sigma))
        #expect(after < 0.82 * before && after < 0.85 * denoisedOnly)
        let finite = out.allSatisfy { $0.isFinite }
        #expect(finite)
    }
}
