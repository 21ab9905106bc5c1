import Foundation
import MoireCore
import MoireFFT

/// A float32 volume, x fastest then y then z, with its voxel size in µm.
public struct Volume: Sendable {
    public var width: Int, height: Int, depth: Int
    public var data: [Float]
    public var voxelUm: (x: Double, y: Double, z: Double)

    public init(width: Int, height: Int, depth: Int, data: [Float], voxelUm: (x: Double, y: Double, z: Double)) {
        precondition(
            data.count == width * height * depth, "volume of \(width)×\(height)×\(depth) given \(data.count) values")
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
            for z in 0..<depth {
                for y in 0..<height { for x in 0..<width { p[z * width + x] = max(p[z * width + x], self[x, y, z]) } }
            }
            return (width, depth, p)
        default:
            var p = [Float](repeating: -.infinity, count: height * depth)
            for z in 0..<depth {
                for y in 0..<height { for x in 0..<width { p[z * height + y] = max(p[z * height + y], self[x, y, z]) } }
            }
            return (height, depth, p)
        }
    }
}

/// Deskewing of a sample-scan light-sheet stack (`LightSheetGeometry`): plane i is shifted by
/// i·step·cos θ / pixel pixels along x with linear interpolation; the output is
/// `nx + ⌊nz·step·|cos θ| / pixel⌋` wide, voxels (pixel, pixel, step·|sin θ|), `pad` where no data.
public enum Deskew {
    public static func apply(_ raw: Volume, geometry g: LightSheetGeometry, pad: Float = 0) -> Volume {
        let nx = raw.width
        let ny = raw.height
        let nz = raw.depth
        let w = g.deskewedWidth(nx: nx, nz: nz)
        let s = g.shiftPerPlane
        let offset = s < 0 ? Double(w - nx) : 0
        var out = [Float](repeating: pad, count: w * ny * nz)
        raw.data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                nonisolated(unsafe) let d = dst.baseAddress!
                nonisolated(unsafe) let sp = src.baseAddress!
                DispatchQueue.concurrentPerform(iterations: nz) { z in
                    // The shift is the same for every x of a plane: so is the interpolation weight, and
                    // each output row is a contiguous blend of two neighbouring input pixels.
                    let shift = Double(z) * s + offset
                    let xLo = max(0, Int(shift.rounded(.up)))
                    let xHi = min(w - 1, Int((shift + Double(nx - 1)).rounded(.down)))
                    guard xLo <= xHi else { return }
                    let base = Double(xLo) - shift
                    let k = Int(base.rounded(.down)) - xLo  // u0 = x + k
                    let f = Float(base - base.rounded(.down))
                    let f1 = 1 - f
                    let last = min(xHi, nx - 2 - k)  // u0 + 1 stays inside the row
                    for y in 0..<ny {
                        let row = sp + (z * ny + y) * nx
                        let o = d + (z * ny + y) * w
                        if xLo <= last { for x in xLo...last { o[x] = row[x + k] * f1 + row[x + k + 1] * f } }
                        if last < xHi { for x in max(xLo, last + 1)...xHi { o[x] = row[min(nx - 1, x + k)] } }
                    }
                }
            }
        }
        return Volume(width: w, height: ny, depth: nz, data: out, voxelUm: (g.pixelUm, g.pixelUm, g.planeSpacingUm))
    }
}

/// The sheared band of columns a deskewed stack's data fill: plane z's data lie within columns
/// `origin + shear·z ..< origin + shear·z + width`. Outside it (the deskewed volume's empty triangles,
/// a third of the benchmark's volume) there is only the pad. `RichardsonLucy` given a band works on
/// the band's grid: relabelling every row by a whole number of columns is exact (no interpolation),
/// and the PSF relabelled the same way keeps the convolution the same.
public struct ShearedBand: Sendable, Equatable {
    public var shear: Int, origin: Int, width: Int
    public init(shear: Int, origin: Int, width: Int) { self.shear = shear; self.origin = origin; self.width = width }
}

extension Deskew {
    /// The band of a deskewed stack of `nz` planes `nx` wide: the shear is the whole number of
    /// columns nearest the per-plane shift, the band covers every plane's data and `margin` columns
    /// on either side.
    public static func band(geometry g: LightSheetGeometry, nx: Int, nz: Int, margin: Int) -> ShearedBand {
        let w = g.deskewedWidth(nx: nx, nz: nz)
        let s = g.shiftPerPlane
        let offset = s < 0 ? Double(w - nx) : 0
        let n = Int(s.rounded())
        var lo = Int.max
        var hi = Int.min
        for z in 0..<nz {
            let shift = Double(z) * s + offset
            lo = min(lo, Int(shift.rounded(.down)) - n * z)
            hi = max(hi, Int((shift + Double(nx - 1)).rounded(.up)) - n * z)
        }
        return ShearedBand(shear: n, origin: lo - margin, width: hi - lo + 1 + 2 * margin)
    }
}

/// The light-sheet PSF for deconvolution in the deskewed frame.
public enum LightSheetPSF {
    /// The Gaussian model of `LightSheetOptics`, sampled on `voxel` out to ±4σ (odd sides), sum 1.
    public static func model(_ o: LightSheetOptics, voxelUm v: (x: Double, y: Double, z: Double)) -> Volume {
        let rx = max(1, Int((4 * o.sigmaLateralUm / v.x).rounded(.up)))
        let ry = max(1, Int((4 * o.sigmaLateralUm / v.y).rounded(.up)))
        let rz = max(1, Int((4 * o.sigmaAxialUm / v.z).rounded(.up)))
        let w = 2 * rx + 1
        let h = 2 * ry + 1
        let d = 2 * rz + 1
        var data = [Float](repeating: 0, count: w * h * d)
        for z in 0..<d {
            for y in 0..<h {
                for x in 0..<w {
                    let dx = Double(x - rx) * v.x
                    let dy = Double(y - ry) * v.y
                    let dz = Double(z - rz) * v.z
                    data[(z * h + y) * w + x] = Float(
                        exp(
                            -(dx * dx + dy * dy) / (2 * o.sigmaLateralUm * o.sigmaLateralUm) - dz * dz
                                / (2 * o.sigmaAxialUm * o.sigmaAxialUm)))
                }
            }
        }
        let sum = data.reduce(0, +)
        return Volume(width: w, height: h, depth: d, data: data.map { $0 / sum }, voxelUm: v)
    }
}

/// Richardson–Lucy deconvolution in 3D through MoireFFT (real-to-complex transforms, planned once
/// per padded shape), with background subtraction, edge-replicating padding by the PSF's half size
/// (to an FFT-friendly size) and Biggs–Andrews acceleration (first-order vector extrapolation,
/// α = Σ gₖ·gₖ₋₁ / Σ gₖ₋₁² clamped to [0, 1]).
///
/// Given a `ShearedBand`, it works on the band's grid (the band's width instead of the volume's),
/// with the PSF's rows relabelled by the same shear, and writes 0 outside the band.
// Sendable by hand: one thread at a time (the owner's worker); plans from FFT's locked cache.
public final class RichardsonLucy: @unchecked Sendable {
    public let width: Int, height: Int, depth: Int
    public let band: ShearedBand
    /// The padded grid (sides and the padding before the data).
    public let pw: Int, ph: Int, pd: Int, px: Int, py: Int, pz: Int
    let otf: AlignedBuffer<Complex32>
    /// The OTF's real part when its imaginary part is negligible (a centro-symmetric PSF, such as the
    /// model's): multiplying by it is cheaper and reads half the memory, and the adjoint is the same.
    let realOTF: AlignedBuffer<Float>?
    let fwd: FFTPlan3DReal, inv: FFTPlan3DReal
    let spectrum: AlignedBuffer<Complex32>
    /// Work buffers of the padded size, reused from run to run: data, estimate, previous estimate,
    /// prediction, blurred prediction/ratio, and the last two steps.
    let data: AlignedBuffer<Float>, y: AlignedBuffer<Float>, blur: AlignedBuffer<Float>
    var x: AlignedBuffer<Float>, prev: AlignedBuffer<Float>
    var g: AlignedBuffer<Float>, gPrev: AlignedBuffer<Float>

    /// For volumes of `width × height × depth` and a PSF with odd sides no larger than the volume's;
    /// `band`: where the data lie (default: everywhere).
    public init(
        psf: Volume, width: Int, height: Int, depth: Int, band: ShearedBand? = nil, rigor: PlanRigor = .estimate
    ) throws {
        try Self.check(psf: psf, width: width, height: height, depth: depth)
        let sum = psf.data.reduce(0, +)
        self.width = width; self.height = height; self.depth = depth
        let band = band ?? ShearedBand(shear: 0, origin: 0, width: width)
        guard band.width >= 1 else { throw MoireError(.usage, "an empty band") }
        self.band = band
        // The PSF on the band's grid: row (y, z) moved by shear·(z − centre) columns, the centre kept.
        let n = band.shear
        let rz = psf.depth / 2
        let grow = abs(n) * rz
        var kernel = Volume(
            width: psf.width + 2 * grow, height: psf.height, depth: psf.depth,
            data: [Float](repeating: 0, count: (psf.width + 2 * grow) * psf.height * psf.depth), voxelUm: psf.voxelUm)
        for z in 0..<psf.depth {
            for y in 0..<psf.height {
                for x in 0..<psf.width {
                    kernel.data[(z * psf.height + y) * kernel.width + x + grow - n * (z - rz)] = psf[x, y, z]
                }
            }
        }
        px = kernel.width / 2; py = psf.height / 2; pz = psf.depth / 2
        pw = FFT.goodSize(band.width + 2 * px); ph = FFT.goodSize(height + 2 * py); pd = FFT.goodSize(depth + 2 * pz)
        fwd = try FFT.plan3DReal(width: pw, height: ph, depth: pd, forward: true, rigor: rigor)
        inv = try FFT.plan3DReal(width: pw, height: ph, depth: pd, forward: false, rigor: rigor)
        spectrum = AlignedBuffer<Complex32>(count: fwd.complexCount)
        let real = AlignedBuffer<Float>(count: pw * ph * pd)
        otf = AlignedBuffer<Complex32>(count: fwd.complexCount)
        // The PSF, normalised, with its centre wrapped to the origin; the OTF carries the 1/N of the inverse FFT.
        let count = Float(pw * ph * pd)
        for z in 0..<kernel.depth {
            for y in 0..<kernel.height {
                for x in 0..<kernel.width {
                    let wx = (x - px + pw) % pw
                    let wy = (y - py + ph) % ph
                    let wz = (z - pz + pd) % pd
                    real.pointer[(wz * ph + wy) * pw + wx] = kernel[x, y, z] / sum / count
                }
            }
        }
        fwd.execute(real: real.pointer, complex: otf.pointer)
        var maxRe: Float = 0
        var maxIm: Float = 0
        for i in 0..<fwd.complexCount {
            maxRe = max(maxRe, abs(otf.pointer[i].re)); maxIm = max(maxIm, abs(otf.pointer[i].im))
        }
        if maxIm <= 1e-5 * maxRe {
            let r = AlignedBuffer<Float>(count: fwd.complexCount)
            for i in 0..<fwd.complexCount { r.pointer[i] = otf.pointer[i].re }
            realOTF = r
        } else {
            realOTF = nil
        }
        let voxels = pw * ph * pd
        data = real  // reused: its contents are replaced by every run
        x = AlignedBuffer(count: voxels); prev = AlignedBuffer(count: voxels); y = AlignedBuffer(count: voxels);
        blur = AlignedBuffer(count: voxels)
        g = AlignedBuffer(count: voxels); gPrev = AlignedBuffer(count: voxels)
    }

    /// Refuses a PSF this deconvolver cannot use for volumes of `width × height × depth`: even
    /// sides (no centre), larger than the volume allows, negative, not finite or all zero.
    public static func check(psf: Volume, width: Int, height: Int, depth: Int) throws {
        guard psf.width % 2 == 1, psf.height % 2 == 1, psf.depth % 2 == 1 else {
            throw MoireError(
                .usage, "the PSF must have odd sides (centred); got \(psf.width)×\(psf.height)×\(psf.depth)")
        }
        guard psf.width <= 2 * width + 1, psf.height <= 2 * height + 1, psf.depth <= 2 * depth + 1 else {
            throw MoireError(
                .usage,
                "the PSF (\(psf.width)×\(psf.height)×\(psf.depth)) is larger than the volume (\(width)×\(height)×\(depth)) allows"
            )
        }
        let sum = psf.data.reduce(0, +)
        guard sum.isFinite, sum > 0, psf.data.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw MoireError(.usage, "the PSF must be finite, non-negative and not all zero")
        }
    }

    /// A percentile of the volume from a strided sample of at most a million voxels.
    public static func percentile(_ v: [Float], _ q: Double) -> Float {
        let stride = max(1, v.count / 1_000_000)
        var sample: [Float] = []
        sample.reserveCapacity(v.count / stride + 1)
        var i = 0
        while i < v.count { sample.append(v[i]); i += stride }
        sample.sort()
        return sample[min(sample.count - 1, Int(Double(sample.count - 1) * q))]
    }

    /// out = PSF ⊛ x (or the correlation, the adjoint, when `adjoint`), on the padded grid. `x` and
    /// `out` must be FFTW-aligned buffers of the padded size; they may be the same.
    func apply(_ x: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>, adjoint: Bool) {
        fwd.execute(real: x, complex: spectrum.pointer)  // out-of-place r2c leaves x intact
        if let realOTF {
            nonisolated(unsafe) let c = UnsafeMutableRawPointer(spectrum.pointer).assumingMemoryBound(to: Float.self)
            nonisolated(unsafe) let r = realOTF.pointer
            parallelRanges(fwd.complexCount) { range in
                // Four complex values (8 floats) times four OTF values, each used for re and im.
                var i = range.lowerBound
                while i + 4 <= range.upperBound {
                    let o = load4(r + i)
                    store8(load8(c + 2 * i) * SIMD8(o[0], o[0], o[1], o[1], o[2], o[2], o[3], o[3]), c + 2 * i)
                    i += 4
                }
                while i < range.upperBound { c[2 * i] *= r[i]; c[2 * i + 1] *= r[i]; i += 1 }
            }
            inv.execute(complex: spectrum.pointer, real: out)
            return
        }
        nonisolated(unsafe) let c = spectrum.pointer
        nonisolated(unsafe) let o = otf.pointer
        parallelRanges(fwd.complexCount) { range in
            for i in range {
                let a = c[i]
                let b = o[i]
                c[i] =
                    adjoint
                    ? Complex32(a.re * b.re + a.im * b.im, a.im * b.re - a.re * b.im)
                    : Complex32(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re)
            }
        }
        inv.execute(complex: spectrum.pointer, real: out)
    }

    /// Deconvolves `image` (its sides must be the ones given at init) with `iterations` RL steps;
    /// `background` is subtracted first (default: the volume's 1st percentile), negatives clipped.
    public func run(
        _ image: Volume, iterations: Int, background: Float? = nil, accelerate: Bool = true,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Volume {
        guard image.width == width, image.height == height, image.depth == depth else {
            throw MoireError(
                .usage,
                "volume is \(image.width)×\(image.height)×\(image.depth); this deconvolver was made for \(width)×\(height)×\(depth)"
            )
        }
        guard iterations >= 0 else { throw MoireError(.usage, "iterations must be ≥ 0") }
        guard image.data.allSatisfy(\.isFinite) else {
            throw MoireError(.numeric, "the volume contains NaN or infinite values")
        }
        let bg = background ?? Self.percentile(image.data, 0.01)
        let n = pw * ph * pd
        let (W, H, D, PW, PH, PX, PY, PZ) = (width, height, depth, pw, ph, px, py, pz)
        let (BW, shear, origin) = (band.width, band.shear, band.origin)
        // Edge-replicating padding of the background-subtracted band, plane by plane in parallel: band
        // column b of plane z is the volume's column origin + shear·z + b (clamped to the volume).
        image.data.withUnsafeBufferPointer { src in
            nonisolated(unsafe) let sp = src.baseAddress!
            nonisolated(unsafe) let dp = data.pointer
            DispatchQueue.concurrentPerform(iterations: pd) { z in
                let sz = min(max(z - PZ, 0), D - 1)
                let first = origin + shear * sz
                let inLo = min(max(0, -first), BW)
                let inHi = max(inLo, min(BW, W - first))  // band columns inside the volume
                for yy in 0..<PH {
                    let sy = min(max(yy - PY, 0), H - 1)
                    let row = sp + (sz * H + sy) * W
                    let out = dp + (z * PH + yy) * PW
                    @inline(__always) func at(_ b: Int) -> Float { max(0, row[min(max(first + b, 0), W - 1)] - bg) }
                    let left = at(0)
                    let right = at(BW - 1)
                    for xx in 0..<PX { out[xx] = left }
                    for b in 0..<inLo { out[PX + b] = at(b) }
                    for b in inLo..<inHi { out[PX + b] = max(0, row[first + b] - bg) }
                    for b in inHi..<BW { out[PX + b] = at(b) }
                    for xx in (PX + BW)..<PW { out[xx] = right }
                }
            }
        }
        x.pointer.update(from: data.pointer, count: n)
        prev.pointer.update(from: data.pointer, count: n)
        var alpha: Float = 0
        let eps: Float = 1e-6
        let tiny: Float = 1e-20
        let chunks = 16
        let partial = UnsafeMutablePointer<Double>.allocate(capacity: 2 * chunks)
        defer { partial.deallocate() }
        for k in 0..<iterations {
            nonisolated(unsafe) let xp = x.pointer
            nonisolated(unsafe) let pp = prev.pointer
            nonisolated(unsafe) let yp = y.pointer
            nonisolated(unsafe) let bp = blur.pointer
            nonisolated(unsafe) let dp = data.pointer
            nonisolated(unsafe) let gp = g.pointer
            nonisolated(unsafe) let gq = gPrev.pointer
            nonisolated(unsafe) let pr = partial
            let a = alpha
            let reduce = accelerate && k >= 1
            // Prediction (Biggs–Andrews) from the last two estimates.
            // Values below `tiny` are set to 0: RL drives empty regions towards 0, and denormal floats are slow.
            parallelRanges(n) { r in
                let a8 = SIMD8<Float>(repeating: a)
                let zero = SIMD8<Float>(repeating: 0)
                let tinyV = SIMD8<Float>(repeating: tiny)
                var i = r.lowerBound
                while i + 8 <= r.upperBound {
                    let x8 = load8(xp + i)
                    var v = x8 + a8 * (x8 - load8(pp + i))
                    v.replace(with: zero, where: .!(v .> tinyV))
                    store8(v, yp + i)
                    i += 8
                }
                while i < r.upperBound { let v = xp[i] + a * (xp[i] - pp[i]); yp[i] = v > tiny ? v : 0; i += 1 }
            }
            apply(yp, into: bp, adjoint: false)
            parallelRanges(n) { r in
                let eps8 = SIMD8<Float>(repeating: eps)
                var i = r.lowerBound
                while i + 8 <= r.upperBound {
                    store8(load8(dp + i) / pointwiseMax(load8(bp + i), eps8), bp + i); i += 8
                }
                while i < r.upperBound { bp[i] = dp[i] / max(bp[i], eps); i += 1 }
            }
            apply(bp, into: bp, adjoint: true)
            // Update, the step g = x − y, and the sums for the next α, in one pass (8 lanes at a time;
            // the sums kept in float per block of 4096 voxels, then in double).
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                var num: Double = 0
                var den: Double = 0
                let lo = n * c / chunks
                let hi = n * (c + 1) / chunks
                let zero = SIMD8<Float>(repeating: 0)
                let tinyV = SIMD8<Float>(repeating: tiny)
                var i = lo
                while i + 8 <= hi {
                    var n8 = zero
                    var d8 = zero
                    let blockEnd = min(hi, i + 4096)
                    while i + 8 <= blockEnd {
                        let y8 = load8(yp + i)
                        let b8 = load8(bp + i)
                        var v = y8 * b8
                        v.replace(with: zero, where: .!(v .> tinyV))
                        store8(v, pp + i)
                        let g8 = v - y8
                        store8(g8, gp + i)
                        if reduce { let q8 = load8(gq + i); n8 += g8 * q8; d8 += q8 * q8 }
                        i += 8
                    }
                    num += Double(n8.sum()); den += Double(d8.sum())
                }
                while i < hi {
                    var v = yp[i] * bp[i]
                    if !(v > tiny) { v = 0 }
                    pp[i] = v
                    let gi = v - yp[i]
                    gp[i] = gi
                    if reduce { num += Double(gi * gq[i]); den += Double(gq[i] * gq[i]) }
                    i += 1
                }
                pr[2 * c] = num; pr[2 * c + 1] = den
            }
            if reduce {
                let num = (0..<chunks).map { partial[2 * $0] }.reduce(0, +)
                let den = (0..<chunks).map { partial[2 * $0 + 1] }.reduce(0, +)
                alpha = den > 0 ? Float(min(max(num / den, 0), 1)) : 0
            }
            swap(&g, &gPrev)
            swap(&x, &prev)
            progress(k + 1, iterations)
        }
        var out = [Float](repeating: 0, count: width * height * depth)
        out.withUnsafeMutableBufferPointer { o in
            nonisolated(unsafe) let op = o.baseAddress!
            nonisolated(unsafe) let xp = x.pointer
            DispatchQueue.concurrentPerform(iterations: D) { z in
                // Volume columns lo..<hi are band columns lo − first…; outside the band: 0.
                let first = origin + shear * z
                let lo = max(0, first)
                let hi = min(W, first + BW)
                guard lo < hi else { return }
                for yy in 0..<H {
                    (op + (z * H + yy) * W + lo).update(
                        from: xp + ((z + PZ) * PH + yy + PY) * PW + PX + lo - first, count: hi - lo)
                }
            }
        }
        return Volume(width: width, height: height, depth: depth, data: out, voxelUm: image.voxelUm)
    }
}

/// Rotation of a deskewed volume (detection frame: x, y in the focal plane, z along the detection
/// axis) into the coverslip frame: X′ along the scan direction, Y, Z′ normal to the coverslip,
/// X′ = x cos θ + z sin θ, Z′ = −x sin θ + z cos θ. The output has isotropic voxels of the lateral
/// pixel size, covers the rotated volume's bounding box, and is sampled bilinearly in the x–z plane.
public enum CoverslipRotation {
    /// The output grid: the coverslip coordinates (µm) of voxel (0, 0, 0), the voxel size, and the shape.
    public struct Grid: Sendable {
        public var originX: Double, originZ: Double, voxelUm: Double, width: Int, depth: Int
    }

    public static func grid(for v: Volume, angleDeg: Double) -> Grid {
        grid(width: v.width, depth: v.depth, voxelUm: v.voxelUm, angleDeg: angleDeg)
    }

    /// The output grid of a volume `width` wide and `depth` deep with voxels `voxelUm`.
    public static func grid(width: Int, depth: Int, voxelUm: (x: Double, y: Double, z: Double), angleDeg: Double)
        -> Grid
    {
        let th = angleDeg * .pi / 180
        let c = cos(th)
        let s = sin(th)
        let xs = [0, Double(width - 1) * voxelUm.x]
        let zs = [0, Double(depth - 1) * voxelUm.z]
        var X: [Double] = []
        var Z: [Double] = []
        for x in xs { for z in zs { X.append(x * c + z * s); Z.append(-x * s + z * c) } }
        let step = voxelUm.x
        return Grid(
            originX: X.min()!, originZ: Z.min()!, voxelUm: step,
            width: Int(((X.max()! - X.min()!) / step).rounded(.down)) + 1,
            depth: Int(((Z.max()! - Z.min()!) / step).rounded(.down)) + 1)
    }

    public static func apply(_ v: Volume, angleDeg: Double, pad: Float = 0) -> Volume {
        let g = grid(for: v, angleDeg: angleDeg)
        let th = angleDeg * .pi / 180
        let c = cos(th)
        let s = sin(th)
        let W = v.width
        let H = v.height
        let D = v.depth
        let vx = v.voxelUm.x
        let vz = v.voxelUm.z
        var out = [Float](repeating: pad, count: g.width * H * g.depth)
        v.data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                nonisolated(unsafe) let sp = src.baseAddress!
                nonisolated(unsafe) let dp = dst.baseAddress!
                DispatchQueue.concurrentPerform(iterations: g.depth) { k in
                    let Zp = g.originZ + Double(k) * g.voxelUm
                    for i in 0..<g.width {
                        let Xp = g.originX + Double(i) * g.voxelUm
                        let fx = (Xp * c - Zp * s) / vx
                        let fz = (Xp * s + Zp * c) / vz
                        guard fx >= 0, fz >= 0, fx <= Double(W - 1), fz <= Double(D - 1) else { continue }
                        let x0 = min(Int(fx), W - 2)
                        let z0 = min(Int(fz), D - 2)
                        let ax = Float(fx - Double(x0))
                        let az = Float(fz - Double(z0))
                        for y in 0..<H {
                            let a = sp[(z0 * H + y) * W + x0]
                            let b = sp[(z0 * H + y) * W + x0 + 1]
                            let cc = sp[((z0 + 1) * H + y) * W + x0]
                            let d = sp[((z0 + 1) * H + y) * W + x0 + 1]
                            dp[(k * H + y) * g.width + i] =
                                (a * (1 - ax) + b * ax) * (1 - az) + (cc * (1 - ax) + d * ax) * az
                        }
                    }
                }
            }
        }
        return Volume(
            width: g.width, height: H, depth: g.depth, data: out, voxelUm: (g.voxelUm, v.voxelUm.y, g.voxelUm))
    }
}

/// LLS-SIM volumes: every plane's phase set is reconstructed along the pattern axis (one orientation,
/// `SIM2DReconstructor`, on the 2× grid), then the SR planes are deskewed with half the pixel size.
public enum LightSheetSIM {
    /// `sets[plane][phase]`, each `rec.width × rec.height`; the same parameters for every plane.
    public static func volume(
        sets: [[[Float]]], reconstructor rec: SIM2DReconstructor, parameters: SIMParameters,
        geometry g: LightSheetGeometry, pad: Float = 0
    ) throws -> Volume {
        guard !sets.isEmpty else { throw MoireError(.usage, "no planes") }
        let sr = try sets.map { try rec.reconstruct($0, parameters: parameters) }
        let half = try LightSheetGeometry(angleDeg: g.angleDeg, stepUm: g.stepUm, pixelUm: g.pixelUm / 2)
        let raw = try Volume(
            planes: sr, width: 2 * rec.width, height: 2 * rec.height, voxelUm: (half.pixelUm, half.pixelUm, g.stepUm))
        return Deskew.apply(raw, geometry: half, pad: pad)
    }

    /// The widefield counterpart (the mean of each phase set), deskewed at the camera's pixel size.
    public static func widefield(
        sets: [[[Float]]], reconstructor rec: SIM2DReconstructor, geometry g: LightSheetGeometry,
        pad: Float = 0
    ) throws -> Volume {
        let wf = try sets.map { try rec.widefield($0) }
        return Deskew.apply(
            try Volume(planes: wf, width: rec.width, height: rec.height, voxelUm: (g.pixelUm, g.pixelUm, g.stepUm)),
            geometry: g, pad: pad)
    }
}

/// Raw sample-scan planes → a deskewed, deconvolved volume: what the live volume stage and
/// `moire reconstruct --llsm` share. Planes that did not come are filled with the stack's
/// background (the 1st percentile of the planes that did), never shifted; the deconvolver is made
/// on the first volume (its PSF from `psf`, given the deskewed voxel size) and reused.
// Sendable by hand: mutable state guarded by `preparation` (NSLock).
public final class LightSheetProcessor: @unchecked Sendable {
    public let geometry: LightSheetGeometry
    public let iterations: Int
    public let background: Float?
    /// How the deconvolver's transforms are planned (live runs: `.fromWisdom`, never slow).
    public let rigor: PlanRigor
    let psf: ((x: Double, y: Double, z: Double)) throws -> Volume
    private var deconvolver: RichardsonLucy?
    /// Held while the deconvolver is made: `prepare` on one thread, the first `process` on another.
    private let preparation = NSLock()

    public init(
        geometry: LightSheetGeometry, iterations: Int, background: Float? = nil, rigor: PlanRigor = .estimate,
        psf: @escaping ((x: Double, y: Double, z: Double)) throws -> Volume
    ) {
        self.geometry = geometry; self.iterations = iterations; self.background = background; self.rigor = rigor;
        self.psf = psf
    }

    /// Makes the deconvolver (PSF, OTF, FFT plans: the slow part of the first stack) for stacks
    /// of `depth` raw planes of `width × height`, ahead of the first stack: the live stage calls it
    /// while the devices arm. `process` waits for it when it is still running.
    public func prepare(width: Int, height: Int, depth: Int) throws {
        guard iterations > 0 else { return }
        _ = try madeDeconvolver(width: width, height: height, depth: depth)
    }

    /// The deconvolver, made on first use (under `preparation`).
    private func madeDeconvolver(width: Int, height: Int, depth: Int) throws -> RichardsonLucy {
        preparation.lock()
        defer { preparation.unlock() }
        if let made = deconvolver { return made }
        // The deskewed volume's shape and voxel, as `Deskew.apply` makes them.
        let deskewedWidth = geometry.deskewedWidth(nx: width, nz: depth)
        let p = try psf((geometry.pixelUm, geometry.pixelUm, geometry.planeSpacingUm))
        let made = try RichardsonLucy(
            psf: p, width: deskewedWidth, height: height, depth: depth,
            band: Deskew.band(geometry: geometry, nx: width, nz: depth, margin: p.width / 2), rigor: rigor)
        deconvolver = made
        return made
    }

    /// The 1st percentile of `planes`, from a strided sample of at most a million pixels.
    public static func background(of planes: [[Float]]) -> Float {
        let total = planes.reduce(0) { $0 + $1.count }
        guard total > 0 else { return 0 }
        let stride = max(1, total / 1_000_000)
        var sample: [Float] = []
        sample.reserveCapacity(total / stride + planes.count)
        for p in planes { var i = 0; while i < p.count { sample.append(p[i]); i += stride } }
        sample.sort()
        return sample[Int(Double(sample.count - 1) * 0.01)]
    }

    /// Processes one stack of `width × height` planes; `missing` lists the planes that did not come.
    public func process(
        planes: [[Float]], width: Int, height: Int, missing: Set<Int> = [],
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> (raw: Volume, deskewed: Volume, volume: Volume) {
        let present = planes.indices.filter { !missing.contains($0) }.map { planes[$0] }
        guard !present.isEmpty else { throw MoireError(.numeric, "a stack with no plane") }
        let fill = Self.background(of: present)
        var filled = planes
        for z in missing where z < filled.count { filled[z] = [Float](repeating: fill, count: width * height) }
        let raw = try Volume(
            planes: filled, width: width, height: height, voxelUm: (geometry.pixelUm, geometry.pixelUm, geometry.stepUm)
        )
        let desk = Deskew.apply(raw, geometry: geometry, pad: fill)
        guard iterations > 0 else { return (raw, desk, desk) }
        // On the band of the deskewed volume the data fill (not its empty triangles).
        let deconvolver = try madeDeconvolver(width: width, height: height, depth: raw.depth)
        return (
            raw, desk, try deconvolver.run(desk, iterations: iterations, background: background, progress: progress)
        )
    }
}
