import Foundation
import MoireConfig
import MoireCore
import MoireFFT
import MoireHardware

/// The widefield detection path of the simulated microscope: specimen × illumination → OTF blur → pixel integration.
///
/// The specimen is static, so the blur is precomputed once per (emission wavelength, pattern
/// wave vector): with illumination `1 + m·cos(2π k·r + φ)` the blurred image is
/// `B0 + m·Re(e^{iφ}·B1)`, where `B0 = OTF ⊗ S` and `B1 = OTF ⊗ (S·e^{i2π k·r})` — exact, and
/// every phase of one orientation shares `B1`. The blur runs on a 2× finer grid that is summed
/// 2×2 into camera pixels (pixel integration).
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class OpticalModel: @unchecked Sendable {
    public let width: Int
    public let height: Int
    public let pixelUm: Double
    public let na: Double
    let fineW: Int, fineH: Int
    let density: AlignedBuffer<Complex32>
    private let lock = NSLock()
    private var b0Cache: [Double: [Float]] = [:]
    private var b1Cache: [String: [Complex32]] = [:]

    /// Builds the model for a `width`×`height` camera ROI of `pixelUm` sample pixels.
    public init(specimen: SpecimenSpec, width: Int, height: Int, pixelUm: Double, na: Double) throws {
        self.width = width; self.height = height; self.pixelUm = pixelUm; self.na = na
        fineW = 2 * width; fineH = 2 * height
        let d = try SpecimenRenderer.render(specimen, width: fineW, height: fineH, pixelUm: pixelUm / 2)
        density = AlignedBuffer<Complex32>(count: fineW * fineH)
        for i in 0..<d.count { density[i] = Complex32(d[i], 0) }
    }

    /// Ideal incoherent OTF at radial frequency `f` (cycles/µm) for cutoff `fc`.
    public static func idealOTF(_ f: Double, cutoff fc: Double) -> Double {
        let r = f / fc
        if r >= 1 { return 0 }
        return 2 / .pi * (acos(r) - r * (1 - r * r).squareRoot())
    }

    /// Widefield image (dye density per camera pixel, blurred) for an emission wavelength.
    public func widefield(emissionNm: Double) throws -> [Float] {
        lock.lock(); defer { lock.unlock() }
        if let b = b0Cache[emissionNm] { return b }
        let c = try blur(modulatedBy: nil, emissionNm: emissionNm)
        let b = c.map(\.re)
        b0Cache[emissionNm] = b
        return b
    }

    /// The complex sideband image B1 for a wave vector (cycles/µm).
    public func sideband(kx: Double, ky: Double, emissionNm: Double) throws -> [Complex32] {
        lock.lock(); defer { lock.unlock() }
        let key = "\(emissionNm)/\(kx)/\(ky)"
        if let b = b1Cache[key] { return b }
        let b = try blur(modulatedBy: (kx, ky), emissionNm: emissionNm)
        b1Cache[key] = b
        return b
    }

    private func blur(modulatedBy k: (Double, Double)?, emissionNm: Double) throws -> [Complex32] {
        let n = fineW * fineH
        let fwd = try FFT.plan2D(width: fineW, height: fineH, kind: .c2cForward)
        let inv = try FFT.plan2D(width: fineW, height: fineH, kind: .c2cBackward)
        let a = AlignedBuffer<Complex32>(count: n)
        let b = AlignedBuffer<Complex32>(count: n)
        let fp = pixelUm / 2
        for y in 0..<fineH {
            let ry = (Double(y) - Double(fineH) / 2) * fp
            for x in 0..<fineW {
                let i = y * fineW + x
                let s = density[i].re
                if let (kx, ky) = k {
                    let rx = (Double(x) - Double(fineW) / 2) * fp
                    let ph = 2 * Double.pi * (kx * rx + ky * ry)
                    a[i] = Complex32(s * Float(cos(ph)), s * Float(sin(ph)))
                } else {
                    a[i] = Complex32(s, 0)
                }
            }
        }
        fwd.execute(a.pointer, b.pointer)
        let fc = 2 * na / (emissionNm / 1000)
        let scale = 1 / Float(n)
        for y in 0..<fineH {
            let fy = Double(y <= fineH / 2 ? y : y - fineH) / (Double(fineH) * fp)
            for x in 0..<fineW {
                let fx = Double(x <= fineW / 2 ? x : x - fineW) / (Double(fineW) * fp)
                let o = Float(Self.idealOTF((fx * fx + fy * fy).squareRoot(), cutoff: fc)) * scale
                let i = y * fineW + x
                b[i] = Complex32(b[i].re * o, b[i].im * o)
            }
        }
        inv.execute(b.pointer, a.pointer)
        // Pixel integration: sum 2×2 fine pixels.
        var out = [Complex32](repeating: .zero, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                var re: Float = 0
                var im: Float = 0
                for dy in 0..<2 {
                    for dx in 0..<2 {
                        let v = a[(2 * y + dy) * fineW + 2 * x + dx]
                        re += v.re; im += v.im
                    }
                }
                out[y * width + x] = Complex32(re, im)
            }
        }
        return out
    }
}
