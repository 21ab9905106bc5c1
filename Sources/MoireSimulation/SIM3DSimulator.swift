import Foundation
import MoireCore
import MoireFFT
import MoireHardware

/// A physical forward model of 3D-SIM (three-beam illumination) for a 3D specimen, with the
/// pattern fixed to the focal plane and the sample scanned in z, as on a real 3D-SIM microscope.
///
/// Illumination relative to the focal plane: `1 + m1·cos(2π k·r + φ)·cos(2π kz·z) + m2·cos(2π 2k·r + 2φ)`.
/// For a stage position z_s the image is `Σ_m [(S·e^{i m 2πk·r}) ⊗ (PSF·A_m)]`, where `A_±1(z) =
/// cos(2π kz z)` rides with the PSF (the pattern moves with the focus) and `A_0 = A_±2 = 1`; so,
/// as in 2D, each orientation needs three blurred volumes B0, B1, B2, and phase p's stack is
/// `B0 + m1·Re(e^{iφ}·B1) + m2·Re(e^{2iφ}·B2)`. The blur runs on a 2× lateral grid, integrated
/// 2×2 into camera pixels; Poisson and Gaussian camera noise follow.
public struct SIM3DSimulator: Sendable {
    public var n = 128  // camera pixels per side
    public var pixelUm = 0.065
    public var nz = 32
    public var dzUm = 0.125
    public var optics = Widefield3D(na: 1.4, immersionIndex: 1.518, emissionNm: 525)
    /// Lateral frequency of order 1 (cycles/µm); order 2 is at twice it.
    public var k1 = 2.4
    /// Axial frequency of order 1's modulation (cycles/µm).
    public var kz = 1.13
    public var m1 = 0.8, m2 = 0.6
    public var firstAngleDeg = 10.0
    public var angles = 3, phases = 5
    /// Expected photons at the brightest voxel of the noise-free widefield stack.
    public var peakPhotons = 2000.0
    public var offsetADU = 100.0, gainADUPerE = 0.5, readNoiseE = 1.5
    public var specimenSeed: UInt64 = 5

    public init() {}

    /// Wave vector (cycles/µm) of orientation `a`, order 1.
    public func k(_ a: Int) -> (Double, Double) {
        let th = (firstAngleDeg + Double(a) * 180 / Double(angles)) * .pi / 180
        return (k1 * cos(th), k1 * sin(th))
    }

    /// Phase of order 1 for phase step p (rad), in the coordinates of the camera grid (pixel (0,0) at the origin, z = 0 mid-stack).
    public func phase(_ p: Int) -> Double { 2 * Double.pi * Double(p) / Double(phases) + 0.3 }

    /// The specimen (ground truth) on the fine grid, which is the 3D-SIM result's grid: `2n × 2n × nz`,
    /// sample (x, y) at ((x − ½)·pixel/2, (y − ½)·pixel/2), plane z at (z − nz/2)·dz.
    public func groundTruth() -> [Float] { specimen() }

    /// 3D specimen density on the fine grid (2n × 2n × nz): filaments (3D worm-like chains within ±1 µm) and beads.
    func specimen() -> [Float] {
        let fn = 2 * n
        let fp = pixelUm / 2
        var d = [Float](repeating: 0, count: fn * fn * nz)
        var rng = SimRandom(seed: specimenSeed)
        func splat(_ x: Double, _ y: Double, _ z: Double, _ w: Float) {
            let fx = x / fp + 0.5
            let fy = y / fp + 0.5
            let fz = z / dzUm + Double(nz / 2)
            let x0 = Int(floor(fx))
            let y0 = Int(floor(fy))
            let z0 = Int(floor(fz))
            let ax = Float(fx - Double(x0))
            let ay = Float(fy - Double(y0))
            let az = Float(fz - Double(z0))
            for (dx, wx) in [(0, 1 - ax), (1, ax)] {
                for (dy, wy) in [(0, 1 - ay), (1, ay)] {
                    for (dz, wz) in [(0, 1 - az), (1, az)] {
                        let xi = x0 + dx
                        let yi = y0 + dy
                        let zi = z0 + dz
                        if xi >= 0, xi < fn, yi >= 0, yi < fn, zi >= 0, zi < nz {
                            d[(zi * fn + yi) * fn + xi] += w * wx * wy * wz
                        }
                    }
                }
            }
        }
        let size = Double(n) * pixelUm
        for _ in 0..<25 {
            var x = rng.uniform() * size
            var y = rng.uniform() * size
            var z = (rng.uniform() - 0.5) * 1.5
            var th = rng.uniform() * 2 * .pi
            var el = (rng.uniform() - 0.5) * 0.6
            for _ in 0..<600 {
                splat(x, y, z, 0.05)
                th += rng.normal() * 0.06; el = max(-0.6, min(0.6, el + rng.normal() * 0.04))
                x += 0.02 * cos(th) * cos(el); y += 0.02 * sin(th) * cos(el); z = max(-1, min(1, z + 0.02 * sin(el)))
            }
        }
        for _ in 0..<40 { splat(rng.uniform() * size, rng.uniform() * size, (rng.uniform() - 0.5) * 2, 0.3) }
        return d
    }

    /// Noisy stacks `[angle][phase]`, each `n × n × nz` (x fastest, z slowest), in ADU.
    public func acquire(noiseSeed: UInt64) throws -> [[[Float]]] {
        let model = try BandModel(self)
        let b0 = model.b0
        let scale = Float(peakPhotons) / max(b0.max() ?? 1, 1e-12)
        var rng = SimRandom(seed: noiseSeed)
        var stacks: [[[Float]]] = []
        for ang in 0..<angles {
            let (kx, ky) = k(ang)
            let (b1, b2) = model.sidebands(kx: kx, ky: ky)
            var perPhase: [[Float]] = []
            for p in 0..<phases {
                let phi = phase(p)
                let c1 = Float(cos(phi))
                let s1 = Float(sin(phi))
                let c2 = Float(cos(2 * phi))
                let s2 = Float(sin(2 * phi))
                var v = [Float](repeating: 0, count: n * n * nz)
                for i in 0..<v.count {
                    let expected =
                        scale
                        * (b0[i] + Float(m1) * (c1 * b1[i].re - s1 * b1[i].im) + Float(m2)
                            * (c2 * b2[i].re - s2 * b2[i].im))
                    let e = rng.poisson(Double(max(0, expected)))
                    v[i] = Float(offsetADU + gainADUPerE * e + gainADUPerE * readNoiseE * rng.normal())
                }
                perPhase.append(v)
            }
            stacks.append(perPhase)
        }
        return stacks
    }

    /// The noise-free blurred volumes of the specimen (camera pixels, `n × n × nz`, z = 0 mid-stack):
    /// B0 (widefield), and per wave vector B1 (order 1, the PSF times cos(2π kz z)) and B2 (order 2).
    /// A frame at stage plane z, pattern (k, φ) is `B0 + m1·Re(e^{iφ}·B1) + m2·Re(e^{2iφ}·B2)` there.
    // Sendable by hand: mutable state guarded by `lock` (NSLock).
    public final class BandModel: @unchecked Sendable {
        public private(set) var b0: [Float]
        let sim: SIM3DSimulator
        let fwd: FFTPlan3D, inv: FFTPlan3D
        let h0: AlignedBuffer<Complex32>, h1: AlignedBuffer<Complex32>
        let specimen: [Float]
        let a: AlignedBuffer<Complex32>, b: AlignedBuffer<Complex32>
        private let lock = NSLock()

        public init(_ sim: SIM3DSimulator) throws {
            self.sim = sim
            let n = sim.n
            let nz = sim.nz
            let fn = 2 * n
            let total = fn * fn * nz
            let psf = try sim.optics.psf(n: fn, pixelUm: sim.pixelUm / 2, nz: nz, dzUm: sim.dzUm)
            let fwd = try FFT.plan3D(width: fn, height: fn, depth: nz, forward: true)
            self.fwd = fwd
            inv = try FFT.plan3D(width: fn, height: fn, depth: nz, forward: false)
            // Transfer functions: the PSF (orders 0, 2) and the PSF·cos(2π kz z) (order 1), centred at the origin.
            func transfer(axial: Bool) -> AlignedBuffer<Complex32> {
                let a = AlignedBuffer<Complex32>(count: total)
                let b = AlignedBuffer<Complex32>(count: total)
                for z in 0..<nz {
                    let w = axial ? Float(cos(2 * Double.pi * sim.kz * Double(z - nz / 2) * sim.dzUm)) : 1
                    for y in 0..<fn {
                        for x in 0..<fn {
                            a[(((z + nz / 2) % nz) * fn + (y + fn / 2) % fn) * fn + (x + fn / 2) % fn] = Complex32(
                                psf[(z * fn + y) * fn + x] * w, 0)
                        }
                    }
                }
                fwd.execute(a.pointer, b.pointer)
                return b
            }
            h0 = transfer(axial: false); h1 = transfer(axial: true)
            specimen = sim.specimen()
            a = AlignedBuffer<Complex32>(count: total); b = AlignedBuffer<Complex32>(count: total)
            b0 = []
            b0 = blur(0, 0, 0, h0).map(\.re)
        }

        /// B1 and B2 for the wave vector (kx, ky) of order 1.
        public func sidebands(kx: Double, ky: Double) -> (b1: [Complex32], b2: [Complex32]) {
            (blur(kx, ky, 1, h1), blur(kx, ky, 2, h0))
        }

        /// The sideband of a two-beam pattern (no axial modulation): `B0 + m·Re(e^{iφ}·B)`.
        public func twoBeamSideband(kx: Double, ky: Double) -> [Complex32] { blur(kx, ky, 1, h0) }

        /// (S·e^{i m 2πk·r}) ⊗ h, binned 2×2 laterally.
        func blur(_ kx: Double, _ ky: Double, _ order: Int, _ h: AlignedBuffer<Complex32>) -> [Complex32] {
            lock.lock(); defer { lock.unlock() }
            let n = sim.n
            let nz = sim.nz
            let fn = 2 * n
            let total = fn * fn * nz
            let pixelUm = sim.pixelUm
            for z in 0..<nz {
                for y in 0..<fn {
                    let ry = (Double(y) - 0.5) * pixelUm / 2
                    for x in 0..<fn {
                        let rx = (Double(x) - 0.5) * pixelUm / 2
                        let ph = 2 * Double.pi * Double(order) * (kx * rx + ky * ry)
                        let v = specimen[(z * fn + y) * fn + x]
                        a[(z * fn + y) * fn + x] = Complex32(v * Float(cos(ph)), v * Float(sin(ph)))
                    }
                }
            }
            fwd.execute(a.pointer, b.pointer)
            let sc = 1 / Float(total)
            for i in 0..<total {
                let p = b[i]
                let q = h[i]
                b[i] = Complex32((p.re * q.re - p.im * q.im) * sc, (p.re * q.im + p.im * q.re) * sc)
            }
            inv.execute(b.pointer, a.pointer)
            var out = [Complex32](repeating: .zero, count: n * n * nz)
            for z in 0..<nz {
                for y in 0..<n {
                    for x in 0..<n {
                        var re: Float = 0
                        var im: Float = 0
                        for dy in 0..<2 {
                            for dx in 0..<2 {
                                let v = a[(z * fn + 2 * y + dy) * fn + 2 * x + dx]; re += v.re; im += v.im
                            }
                        }
                        out[(z * n + y) * n + x] = Complex32(re, im)
                    }
                }
            }
            return out
        }
    }

}
