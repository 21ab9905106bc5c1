import Foundation

/// Image-quality measures used to judge denoising against a ground truth.
public enum ImageMetrics {
    /// Ground truth normalised to [0, 1] between its 0.1 and 99.9 percentiles; `x` fitted to it by
    /// least squares (a·x + b), so that offset and scale differences do not count; then PSNR with peak 1.
    public static func psnr(_ x: [Float], truth: [Float]) -> Double {
        let (g, f) = normalisedPair(x, truth)
        let mse = zip(f, g).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Double(g.count)
        return 10 * log10(1 / max(mse, 1e-30))
    }

    /// Structural similarity (Gaussian window σ = 1.5) of the fitted `x` against the normalised truth.
    public static func ssim(_ x: [Float], truth: [Float], width: Int) -> Double {
        let (g, f) = normalisedPair(x, truth)
        let h = g.count / width
        let mx = blur(f, width, h, 1.5)
        let my = blur(g, width, h, 1.5)
        let sxx = blur(f.map { $0 * $0 }, width, h, 1.5)
        let syy = blur(g.map { $0 * $0 }, width, h, 1.5)
        let sxy = blur(zip(f, g).map { $0 * $1 }, width, h, 1.5)
        let c1 = 0.01 * 0.01
        let c2 = 0.03 * 0.03
        var total = 0.0
        for i in 0..<g.count {
            let vx = sxx[i] - mx[i] * mx[i]
            let vy = syy[i] - my[i] * my[i]
            let cxy = sxy[i] - mx[i] * my[i]
            total +=
                ((2 * mx[i] * my[i] + c1) * (2 * cxy + c2)) / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2))
        }
        return total / Double(g.count)
    }

    /// The truth normalised between its 0.1 and 99.9 percentiles, and `x` fitted to it by least squares
    /// (what PSNR and SSIM compare).
    public static func fitted(_ x: [Float], truth: [Float]) -> (truth: [Float], fitted: [Float]) {
        let (g, f) = normalisedPair(x, truth)
        return (g.map(Float.init), f.map(Float.init))
    }

    static func normalisedPair(_ x: [Float], _ truth: [Float]) -> ([Double], [Double]) {
        let s = truth.sorted()
        let lo = Double(s[Int(Double(s.count - 1) * 0.001)])
        let hi = Double(s[Int(Double(s.count - 1) * 0.999)])
        let g = truth.map { (Double($0) - lo) / max(hi - lo, 1e-12) }
        let xs = x.map(Double.init)
        let mx = xs.reduce(0, +) / Double(xs.count)
        let mg = g.reduce(0, +) / Double(g.count)
        let sxx = xs.map { ($0 - mx) * ($0 - mx) }.reduce(0, +)
        let sxg = zip(xs, g).map { ($0 - mx) * ($1 - mg) }.reduce(0, +)
        let a = sxx > 0 ? sxg / sxx : 0
        let b = mg - a * mx
        return (g, xs.map { a * $0 + b })
    }

    /// Separable Gaussian blur (reflecting edges).
    public static func blur(_ v: [Double], _ w: Int, _ h: Int, _ sigma: Double) -> [Double] {
        let r = max(1, Int((3 * sigma).rounded(.up)))
        var k = (-r...r).map { exp(-Double($0 * $0) / (2 * sigma * sigma)) }
        let ks = k.reduce(0, +); k = k.map { $0 / ks }
        func clampIndex(_ i: Int, _ n: Int) -> Int { i < 0 ? -i - 1 : (i >= n ? 2 * n - i - 1 : i) }
        var tmp = [Double](repeating: 0, count: v.count)
        var out = tmp
        for y in 0..<h {
            for x in 0..<w {
                var s = 0.0
                for j in -r...r { s += k[j + r] * v[y * w + clampIndex(x + j, w)] }
                tmp[y * w + x] = s
            }
        }
        for y in 0..<h {
            for x in 0..<w {
                var s = 0.0
                for j in -r...r { s += k[j + r] * tmp[clampIndex(y + j, h) * w + x] }
                out[y * w + x] = s
            }
        }
        return out
    }

    /// The Gaussian filter with the σ (0.5…3 in steps of 0.25) that scores best against the truth, and that score.
    public static func bestGaussian(_ x: [Float], truth: [Float], width: Int) -> (
        sigma: Double, psnr: Double, image: [Float]
    ) {
        var best = (0.0, -Double.infinity, x)
        for s in stride(from: 0.5, through: 3.0, by: 0.25) {
            let f = blur(x.map(Double.init), width, x.count / width, s).map(Float.init)
            let p = psnr(f, truth: truth)
            if p > best.1 { best = (s, p, f) }
        }
        return best
    }
}
