import Foundation
import MoireCore
import MoireFFT

/// Fourier ring correlation of two independent images of the same object.
public enum FRC {
    /// The FRC curve: (frequency in cycles/µm, correlation) per ring of one spectral pixel.
    /// With `direction` (degrees) only frequencies within `halfAngle` degrees of that direction (either sign) count:
    /// the resolution along one axis.
    public static func curve(
        _ a: [Float], _ b: [Float], width: Int, height: Int, pixelUm: Double,
        direction: Double? = nil, halfAngle: Double = 20
    ) throws -> [(Double, Double)] {
        guard a.count == width * height, b.count == a.count, width == height else {
            throw MoireError(.usage, "FRC needs two square images of the same size")
        }
        let plan = try FFT.plan2D(width: width, height: height, kind: .c2cForward)
        func spectrum(_ x: [Float]) -> AlignedBuffer<Complex32> {
            let mean = x.reduce(0, +) / Float(x.count)
            let i = AlignedBuffer<Complex32>(count: x.count)
            let o = AlignedBuffer<Complex32>(count: x.count)
            // A full Hann window: the borders do not correlate and strong low frequencies do not leak into empty rings.
            let t = SIM2DReconstructor.makeTaper(width: width, height: height, edge: width / 2)
            for k in 0..<x.count { i[k] = Complex32((x[k] - mean) * t[k], 0) }
            plan.execute(i.pointer, o.pointer)
            return o
        }
        let fa = spectrum(a)
        let fb = spectrum(b)
        let rings = width / 2
        var num = [Double](repeating: 0, count: rings)
        var da = num
        var db = num
        var count = num
        for v in 0..<height {
            for u in 0..<width {
                let fu = u < width / 2 ? u : u - width
                let fv = v < height / 2 ? v : v - height
                let r = Int((Double(fu * fu + fv * fv)).squareRoot().rounded())
                guard r < rings else { continue }
                if let direction {
                    var d = abs(atan2(Double(fv), Double(fu)) * 180 / .pi - direction).truncatingRemainder(
                        dividingBy: 180)
                    if d > 90 { d = 180 - d }
                    if d > halfAngle { continue }
                }
                let i = v * width + u
                count[r] += 1
                num[r] += Double(fa[i].re * fb[i].re + fa[i].im * fb[i].im)
                da[r] += Double(fa[i].re * fa[i].re + fa[i].im * fa[i].im)
                db[r] += Double(fb[i].re * fb[i].re + fb[i].im * fb[i].im)
            }
        }
        // Rings with no real content (power per pixel below 1e-7 of the strongest ring's: outside the
        // transfer function, where only round-off of the common signal remains) correlate as 0.
        let power = (0..<rings).map { count[$0] > 0 ? (da[$0] * db[$0]).squareRoot() / count[$0] : 0 }
        let top = power.dropFirst().max() ?? 0
        return (1..<rings).map { r in
            let f = Double(r) / (Double(width) * pixelUm)
            guard power[r] > 1e-7 * top else { return (f, 0) }
            return (f, num[r] / max((da[r] * db[r]).squareRoot(), 1e-30))
        }
    }

    /// Resolution (µm) where the smoothed FRC first drops below `threshold` (1/7 by convention).
    public static func resolution(
        _ a: [Float], _ b: [Float], width: Int, height: Int, pixelUm: Double, threshold: Double = 1.0 / 7,
        direction: Double? = nil
    ) throws -> Double {
        let c = try curve(a, b, width: width, height: height, pixelUm: pixelUm, direction: direction)
        let smooth = c.indices.map { i -> Double in
            let lo = max(0, i - 2)
            let hi = min(c.count - 1, i + 2)
            return c[lo...hi].map(\.1).reduce(0, +) / Double(hi - lo + 1)
        }
        for i in 2..<c.count where smooth[i] < threshold { return 1 / c[i].0 }
        return 1 / c[c.count - 1].0
    }
}

/// Periodic reconstruction artifacts: how far an SR image's spectrum at the pattern's order
/// positions stands out of its neighbourhood.
public enum OrderPeaks {
    /// |F| at ±(harmonic·k) (the largest over the nearest spectral pixels) over the median of a ring
    /// of 12 points 5 spectral pixels around it, by direct Fourier sums (no window). `k` in cycles/µm.
    public static func ratio(
        _ image: [Float], width: Int, height: Int, pixelUm: Double, kx: Double, ky: Double, harmonic: Int = 1
    ) -> Double {
        let (peak, ring) = measure(
            image, width: width, height: height, pixelUm: pixelUm, kx: kx, ky: ky, harmonic: harmonic)
        return peak / max(ring, 1e-30)
    }

    /// |F| at ±(harmonic·k) (the largest over the nearest spectral pixels), mean removed.
    public static func magnitude(
        _ image: [Float], width: Int, height: Int, pixelUm: Double, kx: Double, ky: Double, harmonic: Int = 1
    ) -> Double {
        measure(image, width: width, height: height, pixelUm: pixelUm, kx: kx, ky: ky, harmonic: harmonic).peak
    }

    static func measure(
        _ image: [Float], width: Int, height: Int, pixelUm: Double, kx: Double, ky: Double, harmonic: Int
    ) -> (peak: Double, ring: Double) {
        let mean = image.reduce(0, +) / Float(image.count)
        let u = Double(harmonic) * kx * Double(width) * pixelUm
        let v = Double(harmonic) * ky * Double(height) * pixelUm
        func mag(_ du: Double, _ dv: Double) -> Double {
            var re = 0.0
            var im = 0.0
            for y in 0..<height {
                let py = -2 * Double.pi * (v + dv) * Double(y) / Double(height)
                for x in 0..<width {
                    let a = py - 2 * Double.pi * (u + du) * Double(x) / Double(width)
                    let val = Double(image[y * width + x] - mean)
                    re += val * cos(a); im += val * sin(a)
                }
            }
            return hypot(re, im)
        }
        let peak = [(0.0, 0.0), (1, 0), (0, 1), (-1, 0), (0, -1)].map { mag($0.0, $0.1) }.max()!
        let ring = (0..<12).map { i -> Double in
            let t = Double(i) * .pi / 6; return mag(5 * cos(t), 5 * sin(t))
        }.sorted()
        return (peak, (ring[5] + ring[6]) / 2)
    }
}
