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

    /// The filter's tables for the last parameters reconstructed with.
    private var tablesCache: BandTables?
    /// Order 1's transfer function for the last axial frequency asked for.
    private var orderOneCache: (kz: Double, otf: RadialOTF3D)?
    /// The padding: a lateral border (`grid`) and, when the stack's first or last plane holds
    /// in-focus structure, `planes` mirrored planes above and below (nil: this reconstructor works
    /// on the stacks as they are, their edges faded inside the field).
    private let padding: (grid: PaddedGrid, planes: Int)?
    /// The reconstructors of padded stacks, by the number of planes added above and below (0: the
    /// stack is periodic in z as it is; made when first needed).
    private var cores: [Int: SIM3DReconstructor] = [:]
    /// The share of in-focus structure (relative to the sharpest plane) above which the stack's
    /// edge planes count as cutting through the specimen.
    static let cutSpecimenSharpness = 0.1
    /// Whether the stacks' edges are faded inside the field (only without padding; never in the
    /// reconstruction of padded stacks, whose border is faded already).
    private var fadesEdges: Bool

    /// A reconstructor for stacks of `n × n × nz`. Each plane is mirrored into a lateral border of
    /// at least `edgePadding` pixels (default n/8, at least 16: a narrower fade rings into the
    /// field, measured on a uniform layer) and each stack into nz/4 planes
    /// above and below (at least 2), faded to zero across them, so the transforms see no edge and
    /// the whole volume is kept; 0: no border, the stack's own edges faded (in x, y and z).
    /// Mirroring in z keeps the physics: order 1's axial modulation is even about the focal plane.
    public init(
        n: Int, nz: Int, pixelUm: Double, dzUm: Double, optics: Widefield3D, edgePadding: Int? = nil
    ) throws {
        guard n >= 16, n % 2 == 0, nz >= 4, nz % 2 == 0 else {
            throw MoireError(.usage, "3D-SIM stacks must be at least 16×16×4 with even sides")
        }
        self.n = n; self.nz = nz; self.pixelUm = pixelUm; self.dzUm = dzUm; self.optics = optics
        otf = try optics.otf(n: n, pixelUm: pixelUm, nz: nz, dzUm: dzUm)
        fwd = try FFT.plan3D(width: n, height: n, depth: nz, forward: true)
        bigInv = try FFT.plan3D(width: 2 * n, height: 2 * n, depth: nz, forward: false)
        let border = edgePadding ?? max(16, n / 8)
        if border > 0 {
            padding = (PaddedGrid(width: n, height: n, padding: border), max(2, nz / 4))
            fadesEdges = false
        } else {
            padding = nil
            fadesEdges = true
        }
    }

    /// The reconstructor of stacks padded to `grid` with `planes` planes above and below.
    private func paddedReconstructor(grid: PaddedGrid, planes: Int) throws -> SIM3DReconstructor {
        if let core = cores[planes] { return core }
        let core = try SIM3DReconstructor(
            n: grid.width, nz: nz + 2 * planes, pixelUm: pixelUm, dzUm: dzUm, optics: optics, edgePadding: 0)
        core.fadesEdges = false
        cores[planes] = core
        return core
    }

    /// How much in-focus structure the stack's first or last plane holds (of the widefield mean
    /// of every frame), relative to its sharpest plane: the mean squared Laplacian per plane, the
    /// dullest plane's taken as the noise floor, scaled to 0 (floor) … 1 (sharpest); 1 when even
    /// the dullest plane is half as sharp as the sharpest.
    func edgePlaneSharpness(_ stacks: [[[Float]]]) -> Double {
        let plane = n * n
        var mean = [Double](repeating: 0, count: plane * nz)
        for angle in stacks {
            for stack in angle {
                for i in 0..<(plane * nz) { mean[i] += Double(stack[i]) }
            }
        }
        var energy = [Double](repeating: 0, count: nz)
        for z in 0..<nz {
            var sum = 0.0
            for y in 1..<(n - 1) {
                for x in 1..<(n - 1) {
                    let i = z * plane + y * n + x
                    let laplacian = 4 * mean[i] - mean[i - 1] - mean[i + 1] - mean[i - n] - mean[i + n]
                    sum += laplacian * laplacian
                }
            }
            energy[z] = sum
        }
        guard let floor = energy.min(), let top = energy.max(), top > 0 else { return 0 }
        // Planes all about as sharp as each other: the stack cuts through structure everywhere
        // (or holds only noise, for which a mirrored border does no harm).
        guard floor < 0.5 * top else { return 1 }
        return (max(energy[0], energy[nz - 1]) - floor) / (top - floor)
    }

    /// Reconstructs on the padded grid, the frame's part of the result cut out. Inside the frame
    /// the padded stacks hold the frames (background subtracted); across the border, faded to
    /// zero, they hold what the pattern would have made of the mirrored specimen: orders 0, ±1, ±2
    /// separated on the frame, bands ±1 and ±2 taken to baseband (their carriers removed), mirrored,
    /// and modulated again with the frame's own carriers and phases. (Mirroring the raw frames
    /// would mirror the carriers too: the border's bands would then be the wrong pattern, whose
    /// low frequencies reach into the field.) The phases are referred to the padded grid's first pixel.
    private func reconstructPadded(
        _ stacks: [[[Float]]], parameters: [SIM3DAngle], grid: PaddedGrid, planes: Int, core: SIM3DReconstructor
    ) throws -> [Float] {
        let bg = Float(background)
        let gridPlane = grid.count
        let framePlane = n * n
        let paddedDepth = nz + 2 * planes
        // The padded planes that show each plane of the stack: itself and its mirror images.
        var showing = [[Int]](repeating: [], count: nz)
        for paddedZ in 0..<paddedDepth { showing[PaddedGrid.mirror(paddedZ - planes, nz)].append(paddedZ) }
        // The border's samples: where they lie on the padded grid, the frame pixel they mirror,
        // their weight and their position relative to the frame's first pixel.
        var border: [(index: Int, source: Int, weight: Float, x: Double, y: Double)] = []
        for gy in 0..<grid.height {
            for gx in 0..<grid.width {
                let x = gx - grid.paddingX
                let y = gy - grid.paddingY
                guard !(x >= 0 && x < n && y >= 0 && y < n) else { continue }
                let index = gy * grid.width + gx
                border.append((index, Int(grid.source[index]), grid.window[index], Double(x), Double(y)))
            }
        }
        func unit(_ angle: Double) -> Complex32 { Complex32(Float(cos(angle)), Float(sin(angle))) }
        var paddedStacks: [[[Float]]] = []
        for (angleFrames, angle) in zip(stacks, parameters) {
            let w = try weights(angle.phases)
            let phaseCount = angleFrames.count
            var padded = [[Float]](repeating: [Float](repeating: 0, count: gridPlane * paddedDepth), count: phaseCount)
            // Carriers: e^{−i2πk·r} over the frame (to baseband), e^{i2πk·r} over the border, e^{iφ_p}.
            let toBaseband = (0..<framePlane).map { i in
                unit(-2 * Double.pi * (angle.kx * Double(i % n) + angle.ky * Double(i / n)) * pixelUm)
            }
            let borderCarrier = border.map { unit(2 * Double.pi * (angle.kx * $0.x + angle.ky * $0.y) * pixelUm) }
            let phaseFactors = angle.phases.map { unit($0) }
            var bandZero = [Float](repeating: 0, count: framePlane)
            var bandOne = [Complex32](repeating: .zero, count: framePlane)
            var bandTwo = [Complex32](repeating: .zero, count: framePlane)
            for z in 0..<nz {
                // The orders of this plane, bands ±1 and ±2 at baseband.
                for i in 0..<framePlane {
                    var b0: Float = 0
                    var c1 = Complex32.zero
                    var c2 = Complex32.zero
                    for p in 0..<phaseCount {
                        let v = angleFrames[p][z * framePlane + i] - bg
                        b0 += w[0][p] * v
                        c1.re += w[1][p] * v
                        c1.im += w[2][p] * v
                        c2.re += w[3][p] * v
                        c2.im += w[4][p] * v
                    }
                    let e = toBaseband[i]
                    bandZero[i] = b0
                    bandOne[i] = c1 * e
                    bandTwo[i] = c2 * e * e
                }
                for paddedZ in showing[z] {
                    let zWeight = PaddedGrid.fade(paddedZ, field: nz, padding: planes)
                    let destination = paddedZ * gridPlane
                    for p in 0..<phaseCount {
                        for y in 0..<n {
                            let row = destination + (y + grid.paddingY) * grid.width + grid.paddingX
                            for x in 0..<n {
                                padded[p][row + x] = (angleFrames[p][z * framePlane + y * n + x] - bg) * zWeight
                            }
                        }
                    }
                    for (b, sample) in border.enumerated() {
                        let weight = sample.weight * zWeight
                        for p in 0..<phaseCount {
                            let e = borderCarrier[b] * phaseFactors[p]
                            let one = bandOne[sample.source] * e
                            let two = bandTwo[sample.source] * e * e
                            padded[p][destination + sample.index] =
                                (bandZero[sample.source] + 2 * one.re + 2 * two.re) * weight
                        }
                    }
                }
            }
            paddedStacks.append(padded)
        }
        let originUm = (Double(grid.paddingX), Double(grid.paddingY))
        let shifted = parameters.map { angle in
            var moved = angle
            let delta = 2 * Double.pi * (angle.kx * originUm.0 + angle.ky * originUm.1) * pixelUm
            moved.phases = angle.phases.map { $0 - delta }
            return moved
        }
        core.wiener = wiener
        core.background = 0
        let volume = try core.reconstruct(paddedStacks, parameters: shifted)
        lastSpectralModel = core.lastSpectralModel
        let (bigWidth, outWidth) = (2 * grid.width, 2 * n)
        let (top, left) = (2 * grid.paddingY, 2 * grid.paddingX)
        var result = [Float](repeating: 0, count: outWidth * outWidth * nz)
        for z in 0..<nz {
            for y in 0..<outWidth {
                let source = ((z + planes) * 2 * grid.height + y + top) * bigWidth + left
                let destination = (z * outWidth + y) * outWidth
                for x in 0..<outWidth { result[destination + x] = volume[source + x] }
            }
        }
        return result
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
        if let padding {
            // A specimen inside the stack (its edge planes hold only blur) is periodic in z as it
            // is; one that the stack cuts through is mirrored above and below instead.
            let planes = edgePlaneSharpness(stacks) > Self.cutSpecimenSharpness ? padding.planes : 0
            let core = try paddedReconstructor(grid: padding.grid, planes: planes)
            return try reconstructPadded(stacks, parameters: parameters, grid: padding.grid, planes: planes, core: core)
        }
        let N = 2 * n
        let total = n * n * nz
        let big = N * N * nz
        let taper =
            fadesEdges
            ? SIM2DReconstructor.makeTaper(width: n, height: n, edge: max(8, n / 8))
            : [Float](repeating: 1, count: n * n)
        let zTaper = fadesEdges ? axialTaper() : [Float](repeating: 1, count: nz)
        let sx = Double(n) * pixelUm
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
                // The sub-pixel ramp e^{−i2π(δx·x + δy·y)}.
                let ramp = SeparableRamp(
                    width: n, height: n, alongX: -2 * Double.pi * dx * pixelUm, alongY: -2 * Double.pi * dy * pixelUm)
                for z in 0..<nz {
                    for y in 0..<n {
                        let rowFactor = ramp.alongY[y]
                        for x in 0..<n {
                            let i = (z * n + y) * n + x
                            inBuf[i] = c[i] * rowFactor * ramp.alongX[x]
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
        let tables = try bandTables(parameters)
        // Denominator: the regularisation w²(f), then Σ|H|² of every band (fixed by the parameters).
        let model = wiener == .adaptive ? measureSpectrum(spec0, orientations: parameters.count) : nil
        lastSpectralModel = model
        var den = regularisation(model)
        for j in 0..<big { den[j] += tables.sumH2[j] }
        let spec = AlignedBuffer<Complex32>(count: big)
        for i in 0..<total {
            let j = Int(tables.bandZeroIndex[i])
            let g = tables.bandZero[i] * tables.apodization[j] / den[j]
            spec[j].re += g * spec0[i].re
            spec[j].im += g * spec0[i].im
            for (b, band) in shifted.enumerated() {
                let hb = tables.bands[b][i]
                let jp = Int(tables.plus[b][i])
                let jm = Int(tables.minus[b][i])
                let s = band.data[i]
                let gp = hb * tables.apodization[jp] / den[jp]
                let gm = hb * tables.apodization[jm] / den[jm]
                spec[jp].re += gp * s.re
                spec[jp].im += gp * s.im
                spec[jm].re += gm * s.re
                spec[jm].im -= gm * s.im
            }
        }
        let out = AlignedBuffer<Complex32>(count: big)
        bigInv.execute(spec.pointer, out.pointer)
        let scale = 1 / Float(total)
        return (0..<big).map { out[$0].re * scale }
    }

    /// What the filter needs of one set of parameters, per sample i of the camera grid's spectrum:
    /// band 0's transfer and place on the result's grid, each shifted band's transfer and its two
    /// places (+ and −); per sample of the result's grid, Σ|H|² of every band and the apodization.
    struct BandTables {
        let parameters: [SIM3DAngle]
        let bandZero: [Float]
        let bandZeroIndex: [Int32]
        let bands: [[Float]]
        let plus: [[Int32]]
        let minus: [[Int32]]
        let sumH2: [Float]
        let apodization: [Float]
    }

    /// The tables for `parameters` (made once per parameter set: a live run reuses them).
    func bandTables(_ parameters: [SIM3DAngle]) throws -> BandTables {
        if let cached = tablesCache, cached.parameters == parameters { return cached }
        let N = 2 * n
        let total = n * n * nz
        let sx = Double(n) * pixelUm
        let sz = Double(nz) * dzUm
        @inline(__always) func sgn(_ u: Int, _ len: Int) -> Int { u < len / 2 ? u : u - len }
        func bigIndex(_ U: Int, _ V: Int, _ W: Int) -> Int32 {
            Int32((((W % nz) + nz) % nz * N + ((V % N) + N) % N) * N + ((U % N) + N) % N)
        }
        // The bands in `reconstruct`'s order: per orientation order 1 (k, k_z, m₁), then order 2 (2k, m₂).
        var orderOneOTFs: [Double: RadialOTF3D] = [:]
        for kz in Set(parameters.map(\.kz)) { orderOneOTFs[kz] = try orderOneOTF(kz: kz) }
        let bandList: [(kx: Double, ky: Double, kz: Double, m: Double)] = parameters.flatMap {
            [($0.kx, $0.ky, $0.kz, $0.m1), (2 * $0.kx, 2 * $0.ky, 0, $0.m2)]
        }
        var bandZero = [Float](repeating: 0, count: total)
        var bandZeroIndex = [Int32](repeating: 0, count: total)
        var bands = [[Float]](repeating: [Float](repeating: 0, count: total), count: bandList.count)
        var plus = [[Int32]](repeating: [Int32](repeating: 0, count: total), count: bandList.count)
        var minus = plus
        var sumH2 = [Float](repeating: 0, count: N * N * nz)
        let orientations = Double(parameters.count)
        for w in 0..<nz {
            for v in 0..<n {
                for u in 0..<n {
                    let fu = sgn(u, n)
                    let fv = sgn(v, n)
                    let fw = sgn(w, nz)
                    let i = (w * n + v) * n + u
                    let fz = Double(fw) / sz
                    let h = otf.value(kr: hypot(Double(fu) / sx, Double(fv) / sx), kz: fz)
                    let j = bigIndex(fu, fv, fw)
                    bandZero[i] = Float(h)
                    bandZeroIndex[i] = j
                    sumH2[Int(j)] += Float(orientations * h * h)
                    for (b, band) in bandList.enumerated() {
                        let ku = Int((band.kx * sx).rounded())
                        let kv = Int((band.ky * sx).rounded())
                        let Fu = fu - ku
                        let Fv = fv - kv
                        let r = hypot(Double(Fu) / sx + band.kx, Double(Fv) / sx + band.ky)
                        let transfer =
                            band.kz == 0
                            ? otf.value(kr: r, kz: fz) : (orderOneOTFs[band.kz]?.value(kr: r, kz: fz) ?? 0)
                        let hb = Float(band.m / 2 * transfer)
                        let jp = bigIndex(Fu, Fv, fw)
                        let jm = bigIndex(-Fu, -Fv, -fw)
                        bands[b][i] = hb
                        plus[b][i] = jp
                        minus[b][i] = jm
                        sumH2[Int(jp)] += hb * hb
                        sumH2[Int(jm)] += hb * hb
                    }
                }
            }
        }
        // Apodization to the extended support: laterally f_c + 2|k| (order 2), axially the
        // widefield OTF's reach plus order 1's axial shift; the ideal incoherent OTF's profile over
        // that ellipsoid (as in 2D-SIM).
        let kmax = parameters.map { 2 * hypot($0.kx, $0.ky) }.max() ?? 0
        let kzmax = parameters.map(\.kz).max() ?? 0
        let rr = optics.lateralCutoff + kmax
        let rz = optics.axialCutoff + kzmax
        let profile = IdealOTF(na: 1, emissionNm: 2000)  // cutoff 1: the profile at ρ
        var apodization = [Float](repeating: 0, count: N * N * nz)
        forEachFrequency(width: N) { i, fx, fy, fz in
            let lateral = hypot(fx, fy) / rr
            let axial = fz / rz
            apodization[i] = Float(profile.value((lateral * lateral + axial * axial).squareRoot()))
        }
        let tables = BandTables(
            parameters: parameters, bandZero: bandZero, bandZeroIndex: bandZeroIndex, bands: bands, plus: plus,
            minus: minus, sumH2: sumH2, apodization: apodization)
        tablesCache = tables
        return tables
    }

    /// The transfer function of order 1 (axial frequency `kz`), made once per `kz`.
    func orderOneOTF(kz: Double) throws -> RadialOTF3D {
        if let cached = orderOneCache, cached.kz == kz { return cached.otf }
        let made = try optics.otf(n: n, pixelUm: pixelUm, nz: nz, dzUm: dzUm, axialModulation: kz)
        orderOneCache = (kz, made)
        return made
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
