import Foundation
import MoireCore
import MoireHardware

/// A sample-scan light-sheet acquisition of fluorescent beads: the raw, skewed stack a lattice
/// light-sheet microscope records (plane i sees the sample shifted by i·step along the scan
/// direction, at the sheet angle), with the Gaussian optics of `LightSheetOptics`, Poisson photon
/// noise, the camera's gain, offset and Gaussian read noise. Seeded and deterministic.
public struct LightSheetSimulator: Sendable {
    public var geometry: LightSheetGeometry
    public var optics: LightSheetOptics
    public var width: Int, height: Int, planes: Int
    public var beads = 20
    /// Photons at a bead's brightest voxel, and a uniform background per pixel.
    public var peakPhotons = 300.0
    public var backgroundPhotons = 2.0
    public var offsetADU = 100.0, gainADUPerE = 0.46, readNoiseE = 1.4
    public var seed: UInt64 = 1

    public init(geometry: LightSheetGeometry, optics: LightSheetOptics, width: Int, height: Int, planes: Int) {
        self.geometry = geometry; self.optics = optics; self.width = width; self.height = height; self.planes = planes
    }

    /// Bead centres in the deskewed frame, in µm: x along the deskewed width, y, z along the
    /// detection axis (plane k of the deskewed volume is at z = k · planeSpacing). Every bead lies
    /// well inside the raw field of the planes that see it.
    public func beadPositions() -> [(x: Double, y: Double, z: Double)] {
        var r = SimRandom(seed: seed)
        let s = geometry.shiftPerPlane
        let dx = geometry.pixelUm
        let dzs = geometry.planeSpacingUm
        let reachPlanes = 4 * optics.sigmaAxialUm / dzs + 1
        let reachPx = 4 * optics.sigmaLateralUm / dx + 1
        var out: [(Double, Double, Double)] = []
        var tries = 0
        while out.count < beads && tries < 100_000 {
            tries += 1
            let k = reachPlanes + r.uniform() * (Double(planes - 1) - 2 * reachPlanes)
            let u =
                reachPx + abs(s) * reachPlanes + r.uniform()
                * (Double(width - 1) - 2 * (reachPx + abs(s) * reachPlanes))
            let v = reachPx + r.uniform() * (Double(height - 1) - 2 * reachPx)
            guard k > 0, u > 0, v > 0 else { continue }
            let xd = u + k * s + (s < 0 ? Double(geometry.deskewedWidth(nx: width, nz: planes) - width) : 0)
            let p = (xd * dx, v * dx, k * dzs)
            // Far enough apart to be measured one by one.
            if out.allSatisfy({ hypot(hypot($0.0 - p.0, $0.1 - p.1), $0.2 - p.2) > 8 * optics.sigmaAxialUm }) {
                out.append(p)
            }
        }
        return out
    }

    /// The expected photons of raw plane `i` (no noise), rendered by `LightSheetRenderer` at scan position i·step.
    public func expectedPlane(_ i: Int, beads: [(x: Double, y: Double, z: Double)]) -> [Double] {
        // For negative angles the deskewed frame starts (W − nx) columns further left.
        let xOffset =
            geometry.shiftPerPlane < 0
            ? Double(geometry.deskewedWidth(nx: width, nz: planes) - width) * geometry.pixelUm : 0
        let r = LightSheetRenderer(
            angleDeg: geometry.angleDeg, pixelUm: geometry.pixelUm, optics: optics,
            emitters: beads.map { ($0.x - xOffset, $0.y, $0.z) })
        var img = [Float](repeating: 0, count: width * height)
        img.withUnsafeMutableBufferPointer {
            r.add(
                scanUm: Double(i) * geometry.stepUm, width: width, height: height, peak: peakPhotons,
                into: $0.baseAddress!)
        }
        return img.map { Double($0) + backgroundPhotons }
    }

    /// LLS-SIM: every plane acquired with `phases` shifts of a pattern along x (`kUmInv`, modulation
    /// `m`, phase 2π·p/phases + 0.4); returns the phase sets plane by plane (ADU) and the beads.
    public func acquireSIM(phases: Int, kUmInv: Double, modulation m: Double, noiseSeed: UInt64)
        -> (sets: [[[Float]]], beads: [(x: Double, y: Double, z: Double)], phasesRad: [Double])
    {
        let b = beadPositions()
        var r = SimRandom(seed: noiseSeed)
        let xOffset =
            geometry.shiftPerPlane < 0
            ? Double(geometry.deskewedWidth(nx: width, nz: planes) - width) * geometry.pixelUm : 0
        let rend = LightSheetRenderer(
            angleDeg: geometry.angleDeg, pixelUm: geometry.pixelUm, optics: optics,
            emitters: b.map { ($0.x - xOffset, $0.y, $0.z) })
        let phis = (0..<phases).map { 2 * Double.pi * Double($0) / Double(phases) + 0.4 }
        let sets = (0..<planes).map { i in
            phis.map { phi -> [Float] in
                var img = [Float](repeating: 0, count: width * height)
                img.withUnsafeMutableBufferPointer {
                    rend.add(
                        scanUm: Double(i) * geometry.stepUm, width: width, height: height, peak: peakPhotons,
                        pattern: .init(kx: kUmInv, phaseRad: phi, modulation: m), into: $0.baseAddress!)
                }
                return img.map {
                    Float(
                        offsetADU + gainADUPerE * (r.poisson(Double($0) + backgroundPhotons) + readNoiseE * r.normal())
                    ).rounded()
                }
            }
        }
        return (sets, b, phis)
    }

    /// The raw stack in ADU, plane by plane, with the camera's noise.
    public func acquire(noiseSeed: UInt64) -> (planes: [[Float]], beads: [(x: Double, y: Double, z: Double)]) {
        let b = beadPositions()
        var r = SimRandom(seed: noiseSeed)
        let stack = (0..<planes).map { i in
            expectedPlane(i, beads: b).map { lam -> Float in
                Float(offsetADU + gainADUPerE * (r.poisson(lam) + readNoiseE * r.normal())).rounded()
            }
        }
        return (stack, b)
    }
}

/// Renders what a light-sheet camera sees at one scan position: point emitters (beads) in the
/// deskewed frame (x along the deskewed width, y, z along the detection axis, µm, for scan position
/// 0), imaged through the Gaussian optics of `LightSheetOptics`. At scan position s the camera's
/// column u sees x = u·pixel + s·cos θ, and the focal plane lies at z = s·sin θ.
public struct LightSheetRenderer: Sendable {
    public var angleDeg: Double
    public var pixelUm: Double
    public var optics: LightSheetOptics
    public var emitters: [(x: Double, y: Double, z: Double)]
    /// Each emitter's brightness relative to a bead's (empty: all 1).
    public var weights: [Double]

    public init(
        angleDeg: Double, pixelUm: Double, optics: LightSheetOptics, emitters: [(x: Double, y: Double, z: Double)],
        weights: [Double] = []
    ) {
        precondition(weights.isEmpty || weights.count == emitters.count, "one weight per emitter")
        self.angleDeg = angleDeg; self.pixelUm = pixelUm; self.optics = optics; self.emitters = emitters;
        self.weights = weights
    }

    /// The emitter spacing along a filament (µm) and each emitter's weight: a filament's peak is then
    /// about 0.75 of a bead's (σ√(2π)/spacing emitters overlap across the lateral PSF).
    public static let filamentSpacingUm = 0.05, filamentWeight = 0.15

    /// Seeded 3D filaments in a box of `sizeUm`: worm-like chains (persistence length ≈ 5 µm, 5–25 µm
    /// long) starting anywhere in the box, reflected at its faces; emitters every `filamentSpacingUm`.
    public static func filaments(count: Int, sizeUm: [Double], seed: UInt64) -> [(x: Double, y: Double, z: Double)] {
        var r = SimRandom(seed: seed &+ 0x9E37_79B9_7F4A_7C15)  // a stream of its own: the beads stay where they were
        var out: [(x: Double, y: Double, z: Double)] = []
        let step = filamentSpacingUm
        let persistence = 5.0
        for _ in 0..<count {
            var p = [r.uniform() * sizeUm[0], r.uniform() * sizeUm[1], r.uniform() * sizeUm[2]]
            // A random direction on the sphere.
            var d = [r.normal(), r.normal(), r.normal()]
            let length = 5 + r.uniform() * 20
            var s = 0.0
            while s < length {
                let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).squareRoot()
                d = d.map { $0 / max(n, 1e-12) }
                out.append((p[0], p[1], p[2]))
                for k in 0..<3 {
                    p[k] += step * d[k]
                    if p[k] < 0 { p[k] = -p[k]; d[k] = -d[k] }
                    if p[k] > sizeUm[k] { p[k] = 2 * sizeUm[k] - p[k]; d[k] = -d[k] }
                    // Bending: each component of the direction diffuses by step / persistence per step, so the
                    // angle turned has variance 2·step / persistence (a 3D worm-like chain's).
                    d[k] += r.normal() * (step / persistence).squareRoot()
                }
                s += step
            }
        }
        return out
    }

    /// Seeded beads filling a box of `sizeUm` (x, y, z), at least 4 axial σ apart.
    public static func beads(count: Int, sizeUm: [Double], seed: UInt64, optics: LightSheetOptics) -> [(
        x: Double, y: Double, z: Double
    )] {
        var r = SimRandom(seed: seed)
        var out: [(x: Double, y: Double, z: Double)] = []
        var tries = 0
        while out.count < count && tries < count * 100 {
            tries += 1
            let p = (r.uniform() * sizeUm[0], r.uniform() * sizeUm[1], r.uniform() * sizeUm[2])
            if out.allSatisfy({ hypot(hypot($0.x - p.0, $0.y - p.1), $0.z - p.2) > 4 * optics.sigmaAxialUm }) {
                out.append(p)
            }
        }
        return out
    }

    /// A structured (lattice SIM) excitation fixed to the microscope: intensity 1 + m·cos(2π(kx·x + ky·y) + φ)
    /// in camera coordinates (x = column · pixel, y = row · pixel, µm).
    public struct Pattern: Sendable {
        public var kx: Double, ky: Double, phaseRad: Double, modulation: Double
        public init(kx: Double, ky: Double = 0, phaseRad: Double, modulation: Double) {
            self.kx = kx; self.ky = ky; self.phaseRad = phaseRad; self.modulation = modulation
        }
    }

    /// Adds `peak · profile` of every emitter near the focal plane at scan position `scanUm` to `image`;
    /// with a pattern, each emitter is excited by the pattern's intensity where it sits in the sheet.
    public func add(
        scanUm: Double, width: Int, height: Int, peak: Double, pattern: Pattern? = nil,
        into image: UnsafeMutablePointer<Float>
    ) {
        let th = angleDeg * .pi / 180
        let dx = pixelUm
        let shift = scanUm * cos(th)
        let zf = scanUm * sin(th)
        let sl = optics.sigmaLateralUm
        let sz = optics.sigmaAxialUm
        let reach = Int((5 * sl / dx).rounded(.up))
        for (i, e) in emitters.enumerated() {
            let dz = zf - e.z
            guard abs(dz) < 5 * sz else { continue }
            let cu = (e.x - shift) / dx
            let cv = e.y / dx
            var a = peak * exp(-dz * dz / (2 * sz * sz)) * (weights.isEmpty ? 1 : weights[i])
            if let p = pattern { a *= 1 + p.modulation * cos(2 * .pi * (p.kx * cu + p.ky * cv) * dx + p.phaseRad) }
            let u0 = max(0, Int(cu.rounded(.down)) - reach)
            let u1 = min(width - 1, Int(cu.rounded(.down)) + reach)
            let v0 = max(0, Int(cv) - reach)
            let v1 = min(height - 1, Int(cv) + reach)
            guard u0 <= u1, v0 <= v1 else { continue }
            for v in v0...v1 {
                let ddy = (Double(v) - cv) * dx
                for u in u0...u1 {
                    let ddx = (Double(u) - cu) * dx
                    image[v * width + u] += Float(a * exp(-(ddx * ddx + ddy * ddy) / (2 * sl * sl)))
                }
            }
        }
    }
}
