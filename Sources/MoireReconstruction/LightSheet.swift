import Foundation
import MoireCore
import MoireFFT

/// A float32 volume, x fastest then y then z, with its voxel size in µm.
public struct Volume: Sendable {
    public var width: Int, height: Int, depth: Int
    public var data: [Float]
    public var voxelUm: (x: Double, y: Double, z: Double)

    public init(width: Int, height: Int, depth: Int, data: [Float], voxelUm: (x: Double, y: Double, z: Double)) {
        precondition(data.count == width * height * depth, "volume of \(width)×\(height)×\(depth) given \(data.count) values")
        self.width = width; self.height = height; self.depth = depth; self.data = data; self.voxelUm = voxelUm
    }

    /// A volume from planes (each `width × height`).
    public init(planes: [[Float]], width: Int, height: Int, voxelUm: (x: Double, y: Double, z: Double)) throws {
        guard !planes.isEmpty, planes.allSatisfy({ $0.count == width * height }) else {
            throw MoireError(.usage, "a volume needs planes of \(width)×\(height) pixels")
        }
        self.init(width: width, height: height, depth: planes.count, data: planes.flatMap { $0 }, voxelUm: voxelUm)
    }

    @inline(__always) public subscript(x: Int, y: Int, z: Int) -> Float { data[(z * height + y) * width + x] }

    /// Maximum intensity projections: along z (width × height), along y (width × depth) and along x (height × depth).
    public func mip(along axis: Int) -> (width: Int, height: Int, pixels: [Float]) {
        switch axis {
        case 2:
            var p = [Float](repeating: -.infinity, count: width * height)
            for z in 0..<depth { for i in 0..<(width * height) { p[i] = max(p[i], data[z * width * height + i]) } }
            return (width, height, p)
        case 1:
            var p = [Float](repeating: -.infinity, count: width * depth)
            for z in 0..<depth { for y in 0..<height { for x in 0..<width { p[z * width + x] = max(p[z * width + x], self[x, y, z]) } } }
            return (width, depth, p)
        default:
            var p = [Float](repeating: -.infinity, count: height * depth)
            for z in 0..<depth { for y in 0..<height { for x in 0..<width { p[z * height + y] = max(p[z * height + y], self[x, y, z]) } } }
            return (height, depth, p)
        }
    }
}

/// Deskewing of a sample-scan light-sheet stack (`LightSheetGeometry`): plane i is shifted by
/// i·step·cos θ / pixel pixels along x with linear interpolation; the output is
/// `nx + ⌊nz·step·|cos θ| / pixel⌋` wide, voxels (pixel, pixel, step·|sin θ|), `pad` where no data.
public enum Deskew {
    public static func apply(_ raw: Volume, geometry g: LightSheetGeometry, pad: Float = 0) -> Volume {
        let nx = raw.width, ny = raw.height, nz = raw.depth
        let w = g.deskewedWidth(nx: nx, nz: nz)
        let s = g.shiftPerPlane, offset = s < 0 ? Double(w - nx) : 0
        var out = [Float](repeating: pad, count: w * ny * nz)
        raw.data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                nonisolated(unsafe) let d = dst.baseAddress!, sp = src.baseAddress!
                DispatchQueue.concurrentPerform(iterations: nz) { z in
                    let shift = Double(z) * s + offset
                    for x in 0..<w {
                        let u = Double(x) - shift
                        guard u >= 0, u <= Double(nx - 1) else { continue }
                        let u0 = min(Int(u), nx - 2), f = Float(u - Double(u0))
                        for y in 0..<ny {
                            let row = sp + (z * ny + y) * nx
                            d[(z * ny + y) * w + x] = row[u0] * (1 - f) + row[u0 + 1] * f
                        }
                    }
                }
            }
        }
        return Volume(width: w, height: ny, depth: nz, data: out, voxelUm: (g.pixelUm, g.pixelUm, g.planeSpacingUm))
    }
}

/// The light-sheet PSF for deconvolution in the deskewed frame.
public enum LightSheetPSF {
    /// The Gaussian model of `LightSheetOptics`, sampled on `voxel` out to ±4σ (odd sides), sum 1.
    public static func model(_ o: LightSheetOptics, voxelUm v: (x: Double, y: Double, z: Double)) -> Volume {
        let rx = max(1, Int((4 * o.sigmaLateralUm / v.x).rounded(.up))), ry = max(1, Int((4 * o.sigmaLateralUm / v.y).rounded(.up)))
        let rz = max(1, Int((4 * o.sigmaAxialUm / v.z).rounded(.up)))
        let w = 2 * rx + 1, h = 2 * ry + 1, d = 2 * rz + 1
        var data = [Float](repeating: 0, count: w * h * d)
        for z in 0..<d { for y in 0..<h { for x in 0..<w {
            let dx = Double(x - rx) * v.x, dy = Double(y - ry) * v.y, dz = Double(z - rz) * v.z
            data[(z * h + y) * w + x] = Float(exp(-(dx * dx + dy * dy) / (2 * o.sigmaLateralUm * o.sigmaLateralUm) - dz * dz / (2 * o.sigmaAxialUm * o.sigmaAxialUm)))
        } } }
        let sum = data.reduce(0, +)
        return Volume(width: w, height: h, depth: d, data: data.map { $0 / sum }, voxelUm: v)
    }
}

/// Richardson–Lucy deconvolution in 3D through MoireFFT (real-to-complex transforms, planned once
/// per padded shape), with background subtraction, edge-replicating padding by the PSF's half size
/// (to an FFT-friendly size) and Biggs–Andrews acceleration (first-order vector extrapolation,
/// α = Σ gₖ·gₖ₋₁ / Σ gₖ₋₁² clamped to [0, 1]).
public final class RichardsonLucy: @unchecked Sendable {
    public let width: Int, height: Int, depth: Int
    let pw: Int, ph: Int, pd: Int, px: Int, py: Int, pz: Int
    let otf: AlignedBuffer<Complex32>
    let fwd: FFTPlan3DReal, inv: FFTPlan3DReal
    let spectrum: AlignedBuffer<Complex32>, real: AlignedBuffer<Float>

    /// For volumes of `width × height × depth` and a PSF with odd sides no larger than the volume's.
    public init(psf: Volume, width: Int, height: Int, depth: Int, rigor: PlanRigor = .estimate) throws {
        guard psf.width % 2 == 1, psf.height % 2 == 1, psf.depth % 2 == 1 else {
            throw MoireError(.usage, "the PSF must have odd sides (centred); got \(psf.width)×\(psf.height)×\(psf.depth)")
        }
        guard psf.width <= 2 * width + 1, psf.height <= 2 * height + 1, psf.depth <= 2 * depth + 1 else {
            throw MoireError(.usage, "the PSF (\(psf.width)×\(psf.height)×\(psf.depth)) is larger than the volume (\(width)×\(height)×\(depth)) allows")
        }
        let sum = psf.data.reduce(0, +)
        guard sum.isFinite, sum > 0, psf.data.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw MoireError(.usage, "the PSF must be finite, non-negative and not all zero")
        }
        self.width = width; self.height = height; self.depth = depth
        px = psf.width / 2; py = psf.height / 2; pz = psf.depth / 2
        pw = FFT.goodSize(width + 2 * px); ph = FFT.goodSize(height + 2 * py); pd = FFT.goodSize(depth + 2 * pz)
        fwd = try FFT.plan3DReal(width: pw, height: ph, depth: pd, forward: true, rigor: rigor)
        inv = try FFT.plan3DReal(width: pw, height: ph, depth: pd, forward: false, rigor: rigor)
        spectrum = AlignedBuffer<Complex32>(count: fwd.complexCount)
        real = AlignedBuffer<Float>(count: pw * ph * pd)
        otf = AlignedBuffer<Complex32>(count: fwd.complexCount)
        // The PSF, normalised, with its centre wrapped to the origin; the OTF carries the 1/N of the inverse FFT.
        let n = Float(pw * ph * pd)
        for z in 0..<psf.depth { for y in 0..<psf.height { for x in 0..<psf.width {
            let wx = (x - px + pw) % pw, wy = (y - py + ph) % ph, wz = (z - pz + pd) % pd
            real.pointer[(wz * ph + wy) * pw + wx] = psf[x, y, z] / sum / n
        } } }
        fwd.execute(real: real.pointer, complex: otf.pointer)
    }

    /// out = PSF ⊛ x (or the correlation, the adjoint, when `adjoint`), on the padded grid.
    func apply(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, adjoint: Bool) {
        let n = pw * ph * pd
        real.pointer.update(from: x, count: n)
        fwd.execute(real: real.pointer, complex: spectrum.pointer)
        let c = spectrum.pointer, o = otf.pointer
        for i in 0..<fwd.complexCount {
            let a = c[i], b = o[i]
            c[i] = adjoint ? Complex32(a.re * b.re + a.im * b.im, a.im * b.re - a.re * b.im)
                           : Complex32(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re)
        }
        inv.execute(complex: spectrum.pointer, real: out)
    }

    /// Deconvolves `image` (its sides must be the ones given at init) with `iterations` RL steps;
    /// `background` is subtracted first (default: the volume's 1st percentile), negatives clipped.
    public func run(_ image: Volume, iterations: Int, background: Float? = nil, accelerate: Bool = true,
                    progress: (Int, Int) -> Void = { _, _ in }) throws -> Volume {
        guard image.width == width, image.height == height, image.depth == depth else {
            throw MoireError(.usage, "volume is \(image.width)×\(image.height)×\(image.depth); this deconvolver was made for \(width)×\(height)×\(depth)")
        }
        guard iterations >= 0 else { throw MoireError(.usage, "iterations must be ≥ 0") }
        guard image.data.allSatisfy(\.isFinite) else { throw MoireError(.numeric, "the volume contains NaN or infinite values") }
        let bg = background ?? {
            let sorted = image.data.sorted()
            return sorted[sorted.count / 100]
        }()
        let n = pw * ph * pd
        // Edge-replicating padding of the background-subtracted data.
        var d = [Float](repeating: 0, count: n)
        for z in 0..<pd {
            let sz = min(max(z - pz, 0), depth - 1)
            for y in 0..<ph {
                let sy = min(max(y - py, 0), height - 1)
                for x in 0..<pw {
                    let sx = min(max(x - px, 0), width - 1)
                    d[(z * ph + y) * pw + x] = max(0, image[sx, sy, sz] - bg)
                }
            }
        }
        var x = d, prev = d
        var g = [Float](repeating: 0, count: n), gPrev = [Float](repeating: 0, count: n)
        var y = [Float](repeating: 0, count: n), blur = [Float](repeating: 0, count: n)
        var alpha: Float = 0
        let eps: Float = 1e-6
        for k in 0..<iterations {
            // Prediction (Biggs–Andrews) from the last two estimates.
            for i in 0..<n { y[i] = max(0, x[i] + alpha * (x[i] - prev[i])) }
            y.withUnsafeBufferPointer { yp in blur.withUnsafeMutableBufferPointer { apply(yp.baseAddress!, into: $0.baseAddress!, adjoint: false) } }
            for i in 0..<n { blur[i] = d[i] / max(blur[i], eps) }
            blur.withUnsafeMutableBufferPointer { bp in apply(bp.baseAddress!, into: bp.baseAddress!, adjoint: true) }
            prev = x
            for i in 0..<n { x[i] = max(0, y[i] * blur[i]); g[i] = x[i] - y[i] }
            if accelerate, k >= 1 {
                var num: Double = 0, den: Double = 0
                for i in 0..<n { num += Double(g[i] * gPrev[i]); den += Double(gPrev[i] * gPrev[i]) }
                alpha = den > 0 ? Float(min(max(num / den, 0), 1)) : 0
            }
            swap(&g, &gPrev)
            progress(k + 1, iterations)
        }
        var out = [Float](repeating: 0, count: width * height * depth)
        for z in 0..<depth { for yy in 0..<height {
            for xx in 0..<width { out[(z * height + yy) * width + xx] = x[((z + pz) * ph + yy + py) * pw + xx + px] }
        } }
        return Volume(width: width, height: height, depth: depth, data: out, voxelUm: image.voxelUm)
    }
}
