import Foundation
import MoireCore
import MoireFFT

/// Parameters of one 3D-SIM orientation: the order-1 lateral wave vector (order 2 is at twice it),
/// the order-1 axial modulation frequency, per-frame phases of order 1 and the modulations.
public struct SIM3DAngle: Codable, Sendable, Equatable {
    public var kx: Double, ky: Double
    public var kz: Double
    public var phases: [Double]
    public var m1: Double, m2: Double
    public init(kx: Double, ky: Double, kz: Double, phases: [Double], m1: Double, m2: Double) {
        self.kx = kx; self.ky = ky; self.kz = kz; self.phases = phases; self.m1 = m1; self.m2 = m2
    }
}

/// 3D-SIM (three-beam, 3 angles × 5 phases per plane): separation into orders 0, ±1, ±2 per
/// voxel, shifts laterally by k and 2k, and a generalized Wiener filter with the 3D OTF — order 1's
/// OTF is the widefield OTF shifted axially by ±kz (its axial modulation rides with the PSF). The
/// result has twice the lateral sampling and fills the widefield OTF's missing cone.
///
/// Stacks are `[angle][phase]`, each `n × n × nz` floats (x fastest, z slowest).
// Not Sendable: buffers reused per call: one reconstructor per thread.
public final class SIM3DReconstructor {
    public let n: Int, nz: Int
    public let pixelUm: Double, dzUm: Double
    public let optics: Widefield3D
    /// Regularisation of the Wiener filter: adaptive (from each volume's own band-0 spectrum: the
    /// noise where the 3D OTF passes nothing, the object's power law where it passes signal) or a
    /// constant w at every frequency.
    public var wiener: WienerParameter = .adaptive
    public var background = 0.0
    /// The signal and noise measured on the last volume reconstructed with the adaptive filter (nil:
    /// a constant w, or the fallback when the volume offered no noise reference or no signal).
    public private(set) var lastSpectralModel: SpectralModel?
    /// The constant w used when the adaptive filter finds no noise reference or no signal.
    public static let fallbackWiener = 0.05
    let otf: RadialOTF3D
    let fwd: FFTPlan3D, bigInv: FFTPlan3D
    /// Where each sample of band 0's spectrum goes in the spectral model's fit: fixed by the grid
    /// and the optics, made on the first adaptive volume.
    private lazy var band0Sampling: SpectralModel.Sampling = makeBand0Sampling()
    /// The isotropic frequency |f| / f_c of every sample of the result's spectrum (`2n × 2n × nz`).
    private lazy var resultRho: [Float] = {
        var rho = [Float](repeating: 0, count: 4 * n * n * nz)
        forEachFrequency(width: 2 * n) { i, fx, fy, fz in
            rho[i] = Float((fx * fx + fy * fy + fz * fz).squareRoot() / optics.lateralCutoff)
        }
        return rho
    }()

    public init(n: Int, nz: Int, pixelUm: Double, dzUm: Double, optics: Widefield3D) throws {
        guard n >= 16, n % 2 == 0, nz >= 4, nz % 2 == 0 else {
            throw MoireError(.usage, "3D-SIM stacks must be at least 16×16×4 with even sides")
        }
        self.n = n; self.nz = nz; self.pixelUm = pixelUm; self.dzUm = dzUm; self.optics = optics
        otf = try optics.otf(n: n, pixelUm: pixelUm, nz: nz, dzUm: dzUm)
        fwd = try FFT.plan3D(width: n, height: n, depth: nz, forward: true)
        bigInv = try FFT.plan3D(width: 2 * n, height: 2 * n, depth: nz, forward: false)
    }

    /// The `[angle][phase]` stacks (`nz` planes of `frame(z, angle, phase)`, each `plane` pixels, z
    /// slowest) that `reconstruct` and `estimate` take, from frames in any acquisition order.
    public static func phaseStacks(
        nz: Int, angles: Int, phases: Int, plane: Int,
        frame: (_ z: Int, _ angle: Int, _ phase: Int) -> [Float]
    ) -> [[[Float]]] {
        (0..<angles).map { a in
            (0..<phases).map { p in
                var s = [Float](repeating: 0, count: plane * nz)
                for z in 0..<nz { s.replaceSubrange((z * plane)..<((z + 1) * plane), with: frame(z, a, p)) }
                return s
            }
        }
    }

    /// Widefield reference: the mean of every frame, background subtracted.
    public func widefield(_ stacks: [[[Float]]]) throws -> [Float] {
        try check(stacks)
        var out = [Float](repeating: 0, count: n * n * nz)
        var count: Float = 0
        for a in stacks { for s in a { for i in 0..<out.count { out[i] += s[i] }; count += 1 } }
        return out.map { $0 / count - Float(background) }
    }

    func check(_ stacks: [[[Float]]]) throws {
        guard !stacks.isEmpty, stacks.allSatisfy({ $0.count >= 5 }) else {
            throw MoireError(.usage, "3D-SIM needs at least 5 phases per orientation")
        }
        for (a, ps) in stacks.enumerated() {
            for (p, s) in ps.enumerated() {
                guard s.count == n * n * nz else {
                    throw MoireError(
                        .usage, "stack angle \(a) phase \(p) has \(s.count) voxels; expected \(n)×\(n)×\(nz)")
                }
                guard s.allSatisfy(\.isFinite) else {
                    throw MoireError(.numeric, "stack angle \(a) phase \(p) contains NaN or infinite values")
                }
            }
        }
    }

    /// Least-squares weights for unknowns [B0, Re C1, Im C1, Re C2, Im C2] from phases φ.
    func weights(_ phi: [Double]) throws -> [[Float]] {
        let rows = phi.map { [1, 2 * cos($0), -2 * sin($0), 2 * cos(2 * $0), -2 * sin(2 * $0)] }
        var m = [[Double]](repeating: [Double](repeating: 0, count: 10), count: 5)
        for i in 0..<5 { for j in 0..<5 { m[i][j] = rows.map { $0[i] * $0[j] }.reduce(0, +) }; m[i][5 + i] = 1 }
        for c in 0..<5 {  // Gauss–Jordan with partial pivoting
            guard let p = (c..<5).max(by: { abs(m[$0][c]) < abs(m[$1][c]) }), abs(m[p][c]) > 1e-9 else {
                throw MoireError(.numeric, "the phases \(phi) cannot separate orders 0, ±1, ±2")
            }
            m.swapAt(c, p)
            let d = m[c][c]
            for j in 0..<10 { m[c][j] /= d }
            for r in 0..<5 where r != c { let f = m[r][c]; for j in 0..<10 { m[r][j] -= f * m[c][j] } }
        }
        return (0..<5).map { k in
            phi.indices.map { p in Float((0..<5).map { m[k][5 + $0] * rows[p][$0] }.reduce(0, +)) }
        }
    }

    /// Reconstructs one 3D-SIM volume: `2n × 2n × nz`, same intensity scale as the widefield mean.
    public func reconstruct(_ stacks: [[[Float]]], parameters: [SIM3DAngle]) throws -> [Float] {
        try check(stacks)
        guard parameters.count == stacks.count else {
            throw MoireError(.usage, "\(parameters.count) parameter sets for \(stacks.count) orientations")
        }
        let N = 2 * n
        let total = n * n * nz
        let big = N * N * nz
        let taper = SIM2DReconstructor.makeTaper(width: n, height: n, edge: max(8, n / 8))
        let zTaper = axialTaper()
        let sx = Double(n) * pixelUm
        let sz = Double(nz) * dzUm
        @inline(__always) func sgn(_ u: Int, _ len: Int) -> Int { u < len / 2 ? u : u - len }
        func bigIndex(_ U: Int, _ V: Int, _ W: Int) -> Int {
            ((((W % nz) + nz) % nz) * N + ((V % N) + N) % N) * N + ((U % N) + N) % N
        }
        // Bands per orientation, and band 0 of all orientations.
        var b0 = [Float](repeating: 0, count: total)
        var shifted:
            [(data: AlignedBuffer<Complex32>, kx: Double, ky: Double, kzOffset: Double, m: Double, order: Int)] = []
        let bg = Float(background)
        for (a, par) in parameters.enumerated() {
            let w = try weights(par.phases)
            var c1 = [Complex32](repeating: .zero, count: total)
            var c2 = c1
            for (p, s) in stacks[a].enumerated() {
                for z in 0..<nz {
                    for i in 0..<(n * n) {
                        let idx = z * n * n + i
                        let v = (s[idx] - bg) * taper[i] * zTaper[z]
                        b0[idx] += w[0][p] * v
                        c1[idx].re += w[1][p] * v; c1[idx].im += w[2][p] * v
                        c2[idx].re += w[3][p] * v; c2[idx].im += w[4][p] * v
                    }
                }
            }
            for (order, c) in [(1, c1), (2, c2)] {
                let kx = Double(order) * par.kx
                let ky = Double(order) * par.ky
                let dx = kx - (kx * sx).rounded() / sx
                let dy = ky - (ky * sx).rounded() / sx
                let inBuf = AlignedBuffer<Complex32>(count: total)
                let out = AlignedBuffer<Complex32>(count: total)
                for z in 0..<nz {
                    for y in 0..<n {
                        for x in 0..<n {
                            let ang = -2 * Double.pi * (dx * Double(x) + dy * Double(y)) * pixelUm
                            let v = c[(z * n + y) * n + x]
                            let e = Complex32(Float(cos(ang)), Float(sin(ang)))
                            inBuf[(z * n + y) * n + x] = Complex32(v.re * e.re - v.im * e.im, v.re * e.im + v.im * e.re)
                        }
                    }
                }
                fwd.execute(inBuf.pointer, out.pointer)
                shifted.append((out, kx, ky, order == 1 ? par.kz : 0, order == 1 ? par.m1 : par.m2, order))
            }
        }
        let band0 = AlignedBuffer<Complex32>(count: total)
        let spec0 = AlignedBuffer<Complex32>(count: total)
        for i in 0..<total { band0[i] = Complex32(b0[i], 0) }
        fwd.execute(band0.pointer, spec0.pointer)
        // H of a band at big-grid frequency F (cycles/µm).
        func h0(_ fx: Double, _ fy: Double, _ fz: Double) -> Double { otf.value(kr: hypot(fx, fy), kz: fz) }
        func hBand(
            _ fx: Double, _ fy: Double, _ fz: Double,
            _ b: (data: AlignedBuffer<Complex32>, kx: Double, ky: Double, kzOffset: Double, m: Double, order: Int)
        ) -> Double {
            let r = hypot(fx + b.kx, fy + b.ky)
            if b.kzOffset == 0 { return b.m / 2 * otf.value(kr: r, kz: fz) }
            return b.m / 2 * 0.5 * (otf.value(kr: r, kz: fz - b.kzOffset) + otf.value(kr: r, kz: fz + b.kzOffset))
        }
        // Denominator: the regularisation w²(f), then Σ|H|² of every band.
        let model = wiener == .adaptive ? measureSpectrum(spec0, orientations: parameters.count) : nil
        lastSpectralModel = model
        var den = regularisation(model)
        let A = Double(parameters.count)
        for w in 0..<nz {
            for v in 0..<n {
                for u in 0..<n {
                    let fu = sgn(u, n)
                    let fv = sgn(v, n)
                    let fw = sgn(w, nz)
                    let h = h0(Double(fu) / sx, Double(fv) / sx, Double(fw) / sz)
                    den[bigIndex(fu, fv, fw)] += Float(A * h * h)
                    for b in shifted {
                        let ku = Int((b.kx * sx).rounded())
                        let kv = Int((b.ky * sx).rounded())
                        let Fu = fu - ku
                        let Fv = fv - kv
                        let hb = Float(hBand(Double(Fu) / sx, Double(Fv) / sx, Double(fw) / sz, b))
                        den[bigIndex(Fu, Fv, fw)] += hb * hb
                        den[bigIndex(-Fu, -Fv, -fw)] += hb * hb
                    }
                }
            }
        }
        let kmax = parameters.map { 2 * hypot($0.kx, $0.ky) }.max() ?? 0
        let kzmax = parameters.map(\.kz).max() ?? 0
        let rr = optics.lateralCutoff + kmax
        let rz = optics.axialCutoff + kzmax + optics.axialCutoff
        func apo(_ idx: Int) -> Float {
            let U = idx % N
            let V = (idx / N) % N
            let W = idx / (N * N)
            let fx = Double(sgn(U, N)) / sx
            let fy = Double(sgn(V, N)) / sx
            let fz = Double(sgn(W, nz)) / sz
            return Float(max(0, 1 - ((hypot(fx, fy) / rr) * (hypot(fx, fy) / rr) + (fz / rz) * (fz / rz)).squareRoot()))
        }
        let spec = AlignedBuffer<Complex32>(count: big)
        for w in 0..<nz {
            for v in 0..<n {
                for u in 0..<n {
                    let fu = sgn(u, n)
                    let fv = sgn(v, n)
                    let fw = sgn(w, nz)
                    let i = (w * n + v) * n + u
                    let j = bigIndex(fu, fv, fw)
                    let g = Float(h0(Double(fu) / sx, Double(fv) / sx, Double(fw) / sz)) * apo(j) / den[j]
                    spec[j].re += g * spec0[i].re; spec[j].im += g * spec0[i].im
                    for b in shifted {
                        let ku = Int((b.kx * sx).rounded())
                        let kv = Int((b.ky * sx).rounded())
                        let Fu = fu - ku
                        let Fv = fv - kv
                        let hb = Float(hBand(Double(Fu) / sx, Double(Fv) / sx, Double(fw) / sz, b))
                        let jp = bigIndex(Fu, Fv, fw)
                        let jm = bigIndex(-Fu, -Fv, -fw)
                        let s = b.data[i]
                        let gp = hb * apo(jp) / den[jp]
                        let gm = hb * apo(jm) / den[jm]
                        spec[jp].re += gp * s.re; spec[jp].im += gp * s.im
                        spec[jm].re += gm * s.re; spec[jm].im -= gm * s.im
                    }
                }
            }
        }
        let out = AlignedBuffer<Complex32>(count: big)
        bigInv.execute(spec.pointer, out.pointer)
        let scale = 1 / Float(total)
        return (0..<big).map { out[$0].re * scale }
    }

    /// Calls `body(index, fx, fy, fz)` (cycles/µm) for every sample of a spectrum `width × width × nz`
    /// over this reconstructor's field (the camera's grid for `width` = n, the result's for 2n).
    func forEachFrequency(width: Int, _ body: (Int, Double, Double, Double) -> Void) {
        let sx = Double(n) * pixelUm
        let sz = Double(nz) * dzUm
        for w in 0..<nz {
            let fz = Double(w < nz / 2 ? w : w - nz) / sz
            for v in 0..<width {
                let fy = Double(v < width / 2 ? v : v - width) / sx
                for u in 0..<width {
                    let fx = Double(u < width / 2 ? u : u - width) / sx
                    body((w * width + v) * width + u, fx, fy, fz)
                }
            }
        }
    }

    /// Band 0's samples for the fit: noise where the widefield OTF is zero beyond a third of the
    /// lateral cutoff (outside the support, and in the missing cone away from the low frequencies
    /// that the edge fades leak into), signal where the OTF is at least 0.05, binned by the
    /// isotropic frequency |f| / f_c.
    private func makeBand0Sampling() -> SpectralModel.Sampling {
        let fc = optics.lateralCutoff
        var rho = [Float](repeating: -1, count: n * n * nz)
        var transfer = [Float](repeating: 0, count: n * n * nz)
        forEachFrequency(width: n) { i, fx, fy, fz in
            let kr = hypot(fx, fy)
            let h = otf.value(kr: kr, kz: fz)
            transfer[i] = Float(h)
            if h <= 1e-6, kr > fc / 3 {
                rho[i] = 2  // a noise sample: beyond the fit's 1.05
            } else if h >= 0.05 {
                rho[i] = Float((kr * kr + fz * fz).squareRoot() / fc)
            }
        }
        return SpectralModel.Sampling(rho: rho, otf: transfer)
    }

    /// The object's power law and the noise, fitted to band 0's 3D spectrum (`n × n × nz`, the sum
    /// of `orientations` bands 0) as `band0Sampling` places its samples.
    func measureSpectrum(_ spectrum: AlignedBuffer<Complex32>, orientations: Int) -> SpectralModel? {
        let power = (0..<(n * n * nz)).map { i -> Float in
            let s = spectrum[i]
            return s.re * s.re + s.im * s.im
        }
        return power.withUnsafeBufferPointer {
            SpectralModel.fit(power: $0, sampling: band0Sampling, orientations: orientations)
        }
    }

    /// w²(f) on the result's grid (`2n × 2n × nz`): the model's noise-to-signal ratio at the
    /// isotropic frequency |f| / f_c, or the constant (or fallback) w².
    func regularisation(_ model: SpectralModel?) -> [Float] {
        let constant: Double
        switch wiener {
        case .fixed(let w): constant = w * w
        case .adaptive: constant = Self.fallbackWiener * Self.fallbackWiener
        }
        guard let model else { return [Float](repeating: Float(constant), count: 4 * n * n * nz) }
        return resultRho.map { Float(model.regularisation(atNormalisedFrequency: Double($0))) }
    }
}
