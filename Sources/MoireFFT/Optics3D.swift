import Foundation
import MoireCore

/// The widefield 3D PSF and OTF of a circular pupil (scalar, angular spectrum), computed through FFTs.
///
/// `h(x, y, z) = F⁻¹[P(k)·e^{i2πz·√((n/λ)² − |k|²)}]` with the pupil P = 1 for |k| ≤ NA/λ;
/// PSF = |h|², each plane normalised to unit sum (energy is conserved in propagation). The OTF is
/// its 3D transform, radially averaged into a table in (k_r, k_z), evaluated by bilinear interpolation.
public struct Widefield3D: Sendable {
    public let na: Double
    public let immersionIndex: Double
    public let wavelengthUm: Double

    public init(na: Double, immersionIndex: Double, emissionNm: Double) {
        self.na = na; self.immersionIndex = immersionIndex; wavelengthUm = emissionNm / 1000
    }

    /// Lateral and axial OTF cutoffs (cycles/µm).
    public var lateralCutoff: Double { 2 * na / wavelengthUm }
    public var axialCutoff: Double {
        (immersionIndex - (immersionIndex * immersionIndex - na * na).squareRoot()) / wavelengthUm
    }

    /// The PSF on an `n × n × nz` grid (x fastest, z slowest), centred at (n/2, n/2, nz/2).
    public func psf(n: Int, pixelUm: Double, nz: Int, dzUm: Double) throws -> [Float] {
        let plan = try FFT.plan2D(width: n, height: n, kind: .c2cBackward)
        let k = immersionIndex / wavelengthUm
        let kmax = na / wavelengthUm
        let a = AlignedBuffer<Complex32>(count: n * n)
        let b = AlignedBuffer<Complex32>(count: n * n)
        var out = [Float](repeating: 0, count: n * n * nz)
        for iz in 0..<nz {
            let z = Double(iz - nz / 2) * dzUm
            for v in 0..<n {
                for u in 0..<n {
                    let fu = Double(u < n / 2 ? u : u - n) / (Double(n) * pixelUm)
                    let fv = Double(v < n / 2 ? v : v - n) / (Double(n) * pixelUm)
                    let kr2 = fu * fu + fv * fv
                    if kr2 <= kmax * kmax {
                        // Centre the PSF: a phase ramp of half the grid.
                        let ph = 2 * Double.pi * z * (k * k - kr2).squareRoot() + Double.pi * Double(u + v)
                        a[v * n + u] = Complex32(Float(cos(ph)), Float(sin(ph)))
                    } else {
                        a[v * n + u] = .zero
                    }
                }
            }
            plan.execute(a.pointer, b.pointer)
            var sum: Float = 0
            for i in 0..<(n * n) { let p = b[i].re * b[i].re + b[i].im * b[i].im; out[iz * n * n + i] = p; sum += p }
            if sum > 0 { for i in 0..<(n * n) { out[iz * n * n + i] /= sum } }
        }
        return out
    }

    /// The OTF table (k_r, k_z) from the PSF on the given grid; with `axialModulation` k_z ≠ 0, of
    /// the PSF times cos 2πk_z z (the transfer function of a three-beam pattern's order 1, whose
    /// axial modulation rides with the PSF), sampled exactly on the grid's axial frequencies.
    public func otf(n: Int, pixelUm: Double, nz: Int, dzUm: Double, axialModulation kz: Double = 0) throws
        -> RadialOTF3D
    {
        var p = try psf(n: n, pixelUm: pixelUm, nz: nz, dzUm: dzUm)
        // Normalised by the unmodulated PSF's sum: order 1's transfer is ½ at (0, ±k_z).
        let unmodulatedSum = p.reduce(0, { $0 + Double($1) })
        if kz != 0 {
            for iz in 0..<nz {
                let factor = Float(cos(2 * Double.pi * kz * Double(iz - nz / 2) * dzUm))
                for i in (iz * n * n)..<((iz + 1) * n * n) { p[i] *= factor }
            }
        }
        let f = try FFT.plan3D(width: n, height: n, depth: nz, forward: true)
        let a = AlignedBuffer<Complex32>(count: p.count)
        let b = AlignedBuffer<Complex32>(count: p.count)
        // Move the centre to the origin so the OTF is real and positive.
        for z in 0..<nz {
            for y in 0..<n {
                for x in 0..<n {
                    a[(((z + nz / 2) % nz) * n + (y + n / 2) % n) * n + (x + n / 2) % n] = Complex32(
                        p[(z * n + y) * n + x], 0)
                }
            }
        }
        f.execute(a.pointer, b.pointer)
        let nr = n / 2 + 1
        var table = [Double](repeating: 0, count: nr * (nz / 2 + 1))
        var count = table
        let dc = unmodulatedSum
        for z in 0..<nz {
            for y in 0..<n {
                for x in 0..<n {
                    let fu = x < n / 2 ? x : x - n
                    let fv = y < n / 2 ? y : y - n
                    let fz = abs(z < nz / 2 ? z : z - nz)
                    let r = Int((Double(fu * fu + fv * fv)).squareRoot().rounded())
                    guard r < nr, fz <= nz / 2 else { continue }
                    let i = fz * nr + r
                    table[i] += hypot(Double(b[(z * n + y) * n + x].re), Double(b[(z * n + y) * n + x].im)) / dc
                    count[i] += 1
                }
            }
        }
        for i in 0..<table.count where count[i] > 0 { table[i] /= count[i] }
        return RadialOTF3D(
            table: table, nr: nr, nzHalf: nz / 2 + 1, dkr: 1 / (Double(n) * pixelUm), dkz: 1 / (Double(nz) * dzUm))
    }
}

/// A rotationally symmetric 3D OTF sampled in (k_r, |k_z|).
public struct RadialOTF3D: Sendable {
    let table: [Double]
    let nr: Int, nzHalf: Int
    public let dkr: Double, dkz: Double

    /// OTF magnitude at lateral radius `kr` and axial frequency `kz` (cycles/µm); 0 outside the table.
    public func value(kr: Double, kz: Double) -> Double {
        let x = abs(kr) / dkr
        let y = abs(kz) / dkz
        let x0 = Int(x)
        let y0 = Int(y)
        guard x0 < nr - 1, y0 < nzHalf - 1 else { return 0 }
        let tx = x - Double(x0)
        let ty = y - Double(y0)
        func t(_ i: Int, _ j: Int) -> Double { table[j * nr + i] }
        return (1 - ty) * ((1 - tx) * t(x0, y0) + tx * t(x0 + 1, y0)) + ty
            * ((1 - tx) * t(x0, y0 + 1) + tx * t(x0 + 1, y0 + 1))
    }
}
