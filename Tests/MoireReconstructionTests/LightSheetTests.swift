import Foundation
import MoireCore
import MoireHardware
import MoireReconstruction
import Testing
import MoireSimulation

/// Sub-voxel centre (intensity centroid above the local background in a window) of the blob near (x, y, z).
func centroid(_ v: Volume, _ x: Int, _ y: Int, _ z: Int, r: (Int, Int, Int)) -> (Double, Double, Double) {
    var vals: [(Int, Int, Int, Float)] = []
    for zz in max(0, z - r.2)...min(v.depth - 1, z + r.2) { for yy in max(0, y - r.1)...min(v.height - 1, y + r.1) {
        for xx in max(0, x - r.0)...min(v.width - 1, x + r.0) { vals.append((xx, yy, zz, v[xx, yy, zz])) }
    } }
    let bg = vals.map(\.3).sorted()[vals.count / 4]
    var m = 0.0, sx = 0.0, sy = 0.0, sz = 0.0
    for (xx, yy, zz, a) in vals { let w = Double(max(0, a - bg)); m += w; sx += w * Double(xx); sy += w * Double(yy); sz += w * Double(zz) }
    return (sx / m, sy / m, sz / m)
}

/// FWHM (voxels) of the Gaussian fitted to the profile through (x, y, z) along `axis`: ln(y − base) is fitted by a
/// parabola over the points above 20 % of the peak and the peak's neighbours, weighted by (y − base)² (Guo's estimator), so a bead between
/// two voxels measures the same as one on a voxel.
func fwhm(_ v: Volume, _ x: Int, _ y: Int, _ z: Int, axis: Int, reach: Int) -> Double {
    func at(_ k: Int) -> Double {
        switch axis {
        case 0: return Double(v[min(max(x + k, 0), v.width - 1), y, z])
        case 1: return Double(v[x, min(max(y + k, 0), v.height - 1), z])
        default: return Double(v[x, y, min(max(z + k, 0), v.depth - 1)])
        }
    }
    let prof = (-reach...reach).map(at)
    let base = prof.min()!, peak = prof.max()!
    // Sums for the weighted least squares of ln(y) = a + b·k + c·k².
    var m = [[Double]](repeating: [Double](repeating: 0, count: 3), count: 3), rhs = [Double](repeating: 0, count: 3)
    let top = prof.indices.max { prof[$0] < prof[$1] }!
    for (i, p) in prof.enumerated() {
        let yv = p - base
        // The peak and its neighbours always count (a sharp bead has few points above 20 %).
        guard yv > 0.2 * (peak - base) || (abs(i - top) <= 1 && yv > 1e-6 * (peak - base)) else { continue }
        let k = Double(i - reach), w = yv * yv, l = log(yv)
        let f = [1, k, k * k]
        for r in 0..<3 { rhs[r] += w * f[r] * l; for c in 0..<3 { m[r][c] += w * f[r] * f[c] } }
    }
    // Solve the 3×3 system (Cramer).
    func det(_ a: [[Double]]) -> Double {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    }
    var mc = m
    for r in 0..<3 { mc[r][2] = rhs[r] }
    let c = det(mc) / det(m)
    guard c < 0 else { return .infinity }
    return 2.3548 * (-1 / (2 * c)).squareRoot()
}

@Suite(.serialized) struct LightSheetTests {
    @Test func deskewGeometryFollowsTheFormula() throws {
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        #expect(g.deskewedWidth(nx: 512, nz: 100) == 839)
        #expect(abs(g.shiftPerPlane - 0.4 * cos(31.5 * .pi / 180) / 0.104) < 1e-12)
        #expect(abs(g.planeSpacingUm - 0.4 * sin(31.5 * .pi / 180)) < 1e-12)
        // A line along x in each plane lands where the shear puts it: plane i's column u at u + i·shift.
        let nx = 16, nz = 5
        var planes = [[Float]](repeating: [Float](repeating: 0, count: nx * 2), count: nz)
        for i in 0..<nz { planes[i][3] = 10; planes[i][nx + 3] = 10 }
        let d = Deskew.apply(try Volume(planes: planes, width: nx, height: 2, voxelUm: (0.104, 0.104, 0.4)), geometry: g, pad: -1)
        #expect(d.width == g.deskewedWidth(nx: nx, nz: nz) && d.depth == nz)
        #expect(abs(d.voxelUm.z - g.planeSpacingUm) < 1e-12)
        for i in 0..<nz {
            let target = 3 + Double(i) * g.shiftPerPlane
            // The interpolated mass sits at the shifted position.
            var m = 0.0, c = 0.0
            for x in 0..<d.width where d[x, 0, i] > 0 { m += Double(d[x, 0, i]); c += Double(d[x, 0, i]) * Double(x) }
            #expect(abs(c / m - target) < 1e-4, "plane \(i): \(c / m) vs \(target)")
            #expect(d[0, 0, i] == (i == 0 ? 0 : -1))  // left of the shifted plane: the pad value
        }
    }

    @Test func badGeometryAndPSFsAreRejected() throws {
        for (a, s, p) in [(0.0, 0.4, 0.1), (90.0, 0.4, 0.1), (31.5, 0.0, 0.1), (31.5, -0.4, 0.1), (31.5, 0.4, 0), (.nan, 0.4, 0.1)] {
            #expect(throws: MoireError.self) { _ = try LightSheetGeometry(angleDeg: a, stepUm: s, pixelUm: p) }
        }
        let even = Volume(width: 4, height: 5, depth: 5, data: [Float](repeating: 1, count: 100), voxelUm: (0.1, 0.1, 0.2))
        #expect(throws: MoireError.self) { _ = try RichardsonLucy(psf: even, width: 32, height: 32, depth: 16) }
        let huge = Volume(width: 41, height: 5, depth: 5, data: [Float](repeating: 1, count: 41 * 25), voxelUm: (0.1, 0.1, 0.2))
        #expect(throws: MoireError.self) { _ = try RichardsonLucy(psf: huge, width: 8, height: 32, depth: 16) }
        let negative = Volume(width: 3, height: 3, depth: 3, data: [Float](repeating: -1, count: 27), voxelUm: (0.1, 0.1, 0.2))
        #expect(throws: MoireError.self) { _ = try RichardsonLucy(psf: negative, width: 8, height: 8, depth: 8) }
    }

    @Test func richardsonLucyOfANoiseFreeBlurRecoversAPoint() throws {
        // Analytic case: a single point blurred by the PSF; RL concentrates it back towards the point.
        let o = try LightSheetOptics()
        let psf = LightSheetPSF.model(o, voxelUm: (0.104, 0.104, 0.21))
        let w = 32, h = 32, d = 24
        var data = [Float](repeating: 0, count: w * h * d)
        for z in 0..<psf.depth { for y in 0..<psf.height { for x in 0..<psf.width {
            data[((12 + z - psf.depth / 2) * h + 16 + y - psf.height / 2) * w + 16 + x - psf.width / 2] = 1000 * psf[x, y, z]
        } } }
        let vol = Volume(width: w, height: h, depth: d, data: data, voxelUm: psf.voxelUm)
        let rl = try RichardsonLucy(psf: psf, width: w, height: h, depth: d)
        let out = try rl.run(vol, iterations: 30, background: 0)
        #expect(abs(out.data.reduce(0, +) - 1000) < 20, "RL keeps the flux")
        #expect(out[16, 16, 12] > 4 * vol[16, 16, 12])
        #expect(fwhm(out, 16, 16, 12, axis: 0, reach: 6) < 0.6 * fwhm(vol, 16, 16, 12, axis: 0, reach: 6))
    }

    /// On the sheared band of a deskewed stack, RL is the whole volume's RL: relabelling the rows by
    /// whole columns and the PSF with them changes nothing but the padding far from the data.
    @Test func richardsonLucyOnTheBandMatchesTheWholeVolume() throws {
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        var sim = LightSheetSimulator(geometry: g, optics: try LightSheetOptics(), width: 96, height: 48, planes: 36)
        sim.beads = 10; sim.seed = 11
        let (planes, _) = sim.acquire(noiseSeed: 5)
        let desk = Deskew.apply(try Volume(planes: planes, width: 96, height: 48, voxelUm: (0.104, 0.104, 0.4)), geometry: g, pad: Float(sim.offsetADU))
        let psf = LightSheetPSF.model(sim.optics, voxelUm: desk.voxelUm)
        let band = Deskew.band(geometry: g, nx: 96, nz: 36, margin: psf.width / 2)
        #expect(band.shear == 3 && band.width < desk.width * 3 / 4)
        let full = try RichardsonLucy(psf: psf, width: desk.width, height: desk.height, depth: desk.depth)
        let whole = try full.run(desk, iterations: 10, background: 100)
        let banded = try RichardsonLucy(psf: psf, width: desk.width, height: desk.height, depth: desk.depth, band: band)
        #expect(banded.pw < full.pw)
        let b = try banded.run(desk, iterations: 10, background: 100)
        // Every voxel of every plane's data (and the band's margin) agrees; outside the band: 0.
        var worst: Float = 0, peak: Float = 0, outside: Float = 0
        let s = g.shiftPerPlane
        for z in 0..<desk.depth { for y in 0..<desk.height { for x in 0..<desk.width {
            let first = band.origin + band.shear * z
            if x < first || x >= first + band.width { outside = max(outside, abs(b[x, y, z])); continue }
            let u = Double(x) - Double(z) * s
            guard u >= 0, u <= 95, z >= 6, z < desk.depth - 6 else { continue }  // the data, away from the first and last planes
            worst = max(worst, abs(b[x, y, z] - whole[x, y, z])); peak = max(peak, whole[x, y, z])
        } } }
        #expect(outside == 0)
        #expect(worst <= 0.002 * peak, "largest difference \(worst) of a peak \(peak)")
    }

    /// The light-sheet issue's acceptance on simulated beads: after deskew every bead centre lies within
    /// 0.5 voxel of its true position; after 10 iterations of deconvolution the bead FWHM is at most 0.7×
    /// the deskewed one in x, y and z.
    @Test func simulatedBeadsDeskewToTheirPositionsAndDeconvolveNarrower() throws {
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        var sim = LightSheetSimulator(geometry: g, optics: try LightSheetOptics(), width: 128, height: 64, planes: 40)
        sim.beads = 12; sim.seed = 3
        let (planes, beads) = sim.acquire(noiseSeed: 9)
        #expect(beads.count == 12)
        let raw = try Volume(planes: planes, width: 128, height: 64, voxelUm: (0.104, 0.104, 0.4))
        let desk = Deskew.apply(raw, geometry: g, pad: Float(sim.offsetADU))
        #expect(desk.width == g.deskewedWidth(nx: 128, nz: 40))
        // What the live stage and `moire reconstruct --llsm` do (on the band the data fill).
        let processor = LightSheetProcessor(geometry: g, iterations: 10) { LightSheetPSF.model(sim.optics, voxelUm: $0) }
        let dec = try processor.process(planes: planes, width: 128, height: 64).volume
        var ratios: [Double] = []
        for b in beads {
            let tx = b.x / g.pixelUm, ty = b.y / g.pixelUm, tz = b.z / g.planeSpacingUm
            let c = centroid(desk, Int(tx.rounded()), Int(ty.rounded()), Int(tz.rounded()), r: (4, 4, 4))
            #expect(abs(c.0 - tx) < 0.5 && abs(c.1 - ty) < 0.5 && abs(c.2 - tz) < 0.5, "bead at \(tx), \(ty), \(tz) found at \(c)")
            let (x, y, z) = (Int(tx.rounded()), Int(ty.rounded()), Int(tz.rounded()))
            for axis in 0..<3 {
                let before = fwhm(desk, x, y, z, axis: axis, reach: 6), after = fwhm(dec, x, y, z, axis: axis, reach: 6)
                ratios.append(after / before)
                #expect(after <= 0.7 * before, "axis \(axis): FWHM \(before) → \(after)")
            }
        }
        print(String(format: "light sheet: %d beads, FWHM after/before deconvolution: median %.2f, worst %.2f", beads.count,
                     ratios.sorted()[ratios.count / 2], ratios.max()!))
    }
}

@Suite struct LightSheetFilamentTests {
    /// 3D filaments: the chains are continuous (one emitter every 0.05 µm), bend with the persistence
    /// length asked for, stay in their box, and each lands where the deskew puts it: the deskewed
    /// volume is bright along every chain point the stack saw.
    @Test func filamentsAreContinuousChainsThatDeskewToTheirPlace() throws {
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        let o = try LightSheetOptics()
        let nx = 128, ny = 48, nz = 40
        let box = [Double(g.deskewedWidth(nx: nx, nz: nz)) * 0.104, Double(ny) * 0.104, Double(nz) * g.planeSpacingUm]
        let chain = LightSheetRenderer.filaments(count: 3, sizeUm: box, seed: 2)
        #expect(chain.allSatisfy { $0.x >= 0 && $0.x <= box[0] && $0.y >= 0 && $0.y <= box[1] && $0.z >= 0 && $0.z <= box[2] })
        var jumps = 0
        for (a, b) in zip(chain, chain.dropFirst()) where hypot(hypot(a.x - b.x, a.y - b.y), a.z - b.z) > 0.05 + 1e-9 { jumps += 1 }
        #expect(jumps == 2, "three chains: two jumps between them, none within")
        // Persistence: over the first µm of a chain (20 steps) the direction turns by ≈ √(2 · 1 / 5) rad.
        let long = LightSheetRenderer.filaments(count: 400, sizeUm: [1000, 1000, 1000], seed: 3)
        var cosines: [Double] = []
        var i = 0
        while i + 41 < long.count {
            let a = long[i], b = long[i + 1], c = long[i + 20], d = long[i + 21]
            let u = (b.x - a.x, b.y - a.y, b.z - a.z), v = (d.x - c.x, d.y - c.y, d.z - c.z)
            let dot = (u.0 * v.0 + u.1 * v.1 + u.2 * v.2) / (0.05 * 0.05)
            // Both steps, and everything between them, within one chain (no jump to the next chain).
            let oneChain = (i..<(i + 21)).allSatisfy { hypot(hypot(long[$0 + 1].x - long[$0].x, long[$0 + 1].y - long[$0].y), long[$0 + 1].z - long[$0].z) < 0.05 + 1e-9 }
            if oneChain { cosines.append(dot) }
            i += 100
        }
        let meanCos = cosines.reduce(0, +) / Double(cosines.count)
        #expect(cosines.count > 500 && abs(meanCos - exp(-1.0 / 5)) < 0.05, "⟨cos θ⟩ over 1 µm: \(meanCos), expected \(exp(-0.2))")
        // The stack (noise-free), deskewed: bright at every chain point the raw planes saw.
        let r = LightSheetRenderer(angleDeg: 31.5, pixelUm: 0.104, optics: o, emitters: chain,
                                   weights: [Double](repeating: LightSheetRenderer.filamentWeight, count: chain.count))
        let planes = (0..<nz).map { k -> [Float] in
            var img = [Float](repeating: 0, count: nx * ny)
            img.withUnsafeMutableBufferPointer { r.add(scanUm: Double(k) * 0.4, width: nx, height: ny, peak: 100, into: $0.baseAddress!) }
            return img
        }
        let desk = Deskew.apply(try Volume(planes: planes, width: nx, height: ny, voxelUm: (0.104, 0.104, 0.4)), geometry: g)
        let peak = desk.data.max()!
        var checked = 0, dim = 0
        for p in chain {
            let x = p.x / 0.104, y = p.y / 0.104, z = p.z / g.planeSpacingUm
            let u = x - z * g.shiftPerPlane
            guard u > 6, u < Double(nx - 7), y > 4, y < Double(ny - 5), z > 4, z < Double(nz - 5) else { continue }
            checked += 1
            if desk[Int(x.rounded()), Int(y.rounded()), Int(z.rounded())] < 0.2 * peak { dim += 1 }
        }
        #expect(checked > 100 && dim == 0, "\(dim) of \(checked) chain points dim in the deskewed volume")
        // Away from the chains: dark.
        #expect(desk.data.filter { $0 > 0.2 * peak }.count < desk.data.count / 10)
    }
}

@Suite struct CoverslipRotationTests {
    /// Beads of known detection-frame position land at X′ = x cos θ + z sin θ, Z′ = −x sin θ + z cos θ in the rotated volume.
    @Test func beadsLandWhereTheRotationPutsThem() throws {
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        var sim = LightSheetSimulator(geometry: g, optics: try LightSheetOptics(), width: 96, height: 32, planes: 30)
        sim.beads = 6; sim.seed = 5; sim.readNoiseE = 0; sim.backgroundPhotons = 0
        let (planes, beads) = sim.acquire(noiseSeed: 2)
        let desk = Deskew.apply(try Volume(planes: planes, width: 96, height: 32, voxelUm: (0.104, 0.104, 0.4)), geometry: g, pad: Float(sim.offsetADU))
        let rot = CoverslipRotation.apply(desk, angleDeg: 31.5, pad: Float(sim.offsetADU))
        let grid = CoverslipRotation.grid(for: desk, angleDeg: 31.5)
        #expect(rot.width == grid.width && rot.depth == grid.depth && abs(rot.voxelUm.z - 0.104) < 1e-12)
        let th = 31.5 * Double.pi / 180
        for b in beads {
            let X = b.x * cos(th) + b.z * sin(th), Z = -b.x * sin(th) + b.z * cos(th)
            let ti = (X - grid.originX) / grid.voxelUm, tk = (Z - grid.originZ) / grid.voxelUm, ty = b.y / 0.104
            let c = centroid(rot, Int(ti.rounded()), Int(ty.rounded()), Int(tk.rounded()), r: (5, 4, 5))
            #expect(abs(c.0 - ti) < 0.75 && abs(c.1 - ty) < 0.75 && abs(c.2 - tk) < 0.75, "bead at \(ti), \(ty), \(tk) found at \(c)")
        }
    }
}

@Suite struct LightSheetSIMTests {
    /// LLS-SIM: 3 or 5 phases per plane along x, reconstructed plane by plane and deskewed at half the pixel:
    /// beads sit where they are and are narrower along the pattern (x) than in the deskewed widefield.
    @Test(arguments: [3, 5]) func llsSIMVolumesAreSharperAlongThePattern(phases: Int) throws {
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        var sim = LightSheetSimulator(geometry: g, optics: try LightSheetOptics(), width: 128, height: 64, planes: 30)
        sim.beads = 8; sim.seed = 7; sim.peakPhotons = 800
        let k = 3.4, m = 0.9
        let (sets, beads, phis) = sim.acquireSIM(phases: phases, kUmInv: k, modulation: m, noiseSeed: 4)
        var o = SIM2DOptions()
        o.background = sim.offsetADU
        let rec = try SIM2DReconstructor(width: 128, height: 64, pixelUm: g.pixelUm, angles: 1, phases: phases,
                                         otf: IdealOTF(na: 1.1, emissionNm: 520), options: o)
        let params = SIMParameters(angles: [SIMAngleParameters(kx: k, ky: 0, phases: phis, modulation: m, confidence: 0, source: "given", flagged: false)])
        let sr = try LightSheetSIM.volume(sets: sets, reconstructor: rec, parameters: params, geometry: g)
        let wf = try LightSheetSIM.widefield(sets: sets, reconstructor: rec, geometry: g, pad: Float(sim.offsetADU))
        let half = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.052)
        #expect(sr.width == half.deskewedWidth(nx: 256, nz: 30) && sr.height == 128 && sr.depth == 30)
        var ratios: [(Double, Double)] = []
        for b in beads {
            let wx = b.x / 0.104, wy = b.y / 0.104, wz = b.z / g.planeSpacingUm
            let sx = b.x / 0.052, sy = b.y / 0.052
            let (x0, y0, z0) = (Int(wx.rounded()), Int(wy.rounded()), Int(wz.rounded()))
            let (x1, y1) = (Int(sx.rounded()), Int(sy.rounded()))
            let c = centroid(sr, x1, y1, z0, r: (8, 8, 3))
            #expect(abs(c.0 - sx) < 1 && abs(c.1 - sy) < 1 && abs(c.2 - wz) < 0.7, "bead at \(sx), \(sy), \(wz) found at \(c)")
            // FWHM in µm along x (the pattern) and along y.
            let wfx = fwhm(wf, x0, y0, z0, axis: 0, reach: 6) * 0.104, srx = fwhm(sr, x1, y1, z0, axis: 0, reach: 12) * 0.052
            let wfy = fwhm(wf, x0, y0, z0, axis: 1, reach: 6) * 0.104, sry = fwhm(sr, x1, y1, z0, axis: 1, reach: 12) * 0.052
            ratios.append((srx / wfx, sry / wfy))
        }
        let mx = ratios.map(\.0).sorted()[ratios.count / 2], my = ratios.map(\.1).sorted()[ratios.count / 2]
        print(String(format: "LLS-SIM (%d phases): median FWHM SR/widefield along the pattern %.2f, across %.2f", phases, mx, my))
        #expect(mx < 0.8 && mx < my - 0.1)
    }
}
