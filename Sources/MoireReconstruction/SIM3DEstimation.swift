import Foundation
import MoireCore
import MoireFFT

extension SIM3DAngle {
    /// The axial frequency of order 1 of a three-beam pattern whose side beams make lateral frequency
    /// `kUm` (cycles/µm): the centre beam's n/λ minus the side beams' axial component √((n/λ)² − k²).
    /// `ThreeBeam.kz`, an error when the pattern cannot be made.
    public static func threeBeamKz(kUm: Double, excitationNm: Double, immersionIndex: Double) throws -> Double {
        guard kUm > 0, let kz = ThreeBeam.kz(kUm: kUm, excitationNm: excitationNm, immersionIndex: immersionIndex)
        else {
            throw MoireError(
                .usage,
                "a pattern of \(kUm) cycles/µm cannot be made with \(excitationNm) nm light in n = \(immersionIndex) (at most \(immersionIndex / (excitationNm / 1000)))"
            )
        }
        return kz
    }
}

/// 3D-SIM parameters estimated from the data, with what the estimation saw.
public struct SIM3DEstimate: Sendable {
    /// What to reconstruct with: the estimated lateral wave vectors and per-frame phases, the prior's
    /// axial frequency and modulations (or the prior's wave vector, flagged, where the estimate was not trusted).
    public var angles: [SIM3DAngle]
    /// The 2D estimation on the z-projection (confidence, flags and reasons per orientation).
    public var projected: SIMParameters
}

extension SIM3DReconstructor {
    /// Estimates every orientation's lateral wave vector (order 1) and the phase of every frame from
    /// the stacks themselves, seeded by `priors` (the pattern's nominal parameters).
    ///
    /// The phase stacks are summed over z (with the axial fade of `reconstruct`). In the projection,
    /// order 1 (lateral k, phase φ) keeps its lateral frequency — its axial modulation only weights
    /// it by the OTF at ±kz — and order 2 sits at 2k with phase 2φ. For five (or more) phases spread
    /// around the circle the order-2 terms e^{±2iφ} are orthogonal to orders 0 and ±1 in the
    /// least-squares separation, so the projection is a 2D-SIM phase set for orders 0, ±1: the 2D
    /// estimator (`SIM2DReconstructor.estimate`: correlation peak near the prior, sub-pixel
    /// refinement, per-frame phases, trust checks with fallback to the prior) applies unchanged.
    /// kz and the modulations are the prior's (kz follows from the excitation optics; the projected
    /// modulation is not m₁).
    public func estimate(_ stacks: [[[Float]]], priors: [SIM3DAngle], options: SIM2DOptions = SIM2DOptions()) throws
        -> SIM3DEstimate
    {
        try estimate(stacks, prior: .patterns(priors), options: options)
    }

    /// What the estimation starts from: the nominal parameters of every orientation, or only the
    /// pattern's period (orientations 180°/angles apart, found together on the ring) with the axial
    /// frequency and the modulations to assume.
    public enum Prior: Sendable {
        case patterns([SIM3DAngle])
        case period(Double, kz: Double, m1: Double = 0.7, m2: Double = 0.5)
    }

    public func estimate(_ stacks: [[[Float]]], prior: Prior, options: SIM2DOptions = SIM2DOptions()) throws
        -> SIM3DEstimate
    {
        try check(stacks)
        let phases = stacks[0].count
        guard stacks.allSatisfy({ $0.count == phases }) else {
            throw MoireError(.usage, "every orientation needs the same number of phases")
        }
        if case .patterns(let priors) = prior {
            guard priors.count == stacks.count else {
                throw MoireError(.usage, "\(priors.count) pattern priors for \(stacks.count) orientations")
            }
            guard priors.allSatisfy({ $0.phases.count == phases }) else {
                throw MoireError(.usage, "every prior needs \(phases) phases")
            }
        }
        let zTaper = axialTaper()
        let bg = Float(background)
        let plane = n * n
        var frames: [[Float]] = []
        for angle in stacks {
            for s in angle {
                var f = [Float](repeating: 0, count: plane)
                for z in 0..<nz {
                    let w = zTaper[z]
                    let base = z * plane
                    for i in 0..<plane { f[i] += (s[base + i] - bg) * w }
                }
                frames.append(f)
            }
        }
        var o = options
        o.background = 0
        let rec2 = try SIM2DReconstructor(
            width: n, height: n, pixelUm: pixelUm, angles: stacks.count, phases: phases,
            otf: IdealOTF(na: optics.na, emissionNm: optics.wavelengthUm * 1000), options: o)
        let projected: SIMParameters
        let priors: [SIM3DAngle]
        switch prior {
        case .patterns(let given):
            projected = try rec2.estimate(
                frames, priors: given.map { PatternPrior(kx: $0.kx, ky: $0.ky, phases: $0.phases, modulation: $0.m1) })
            priors = given
        case .period(let period, let kz, let m1, let m2):
            projected = try rec2.estimate(frames, periodUm: period, modulation: m1)
            priors = projected.angles.map {
                SIM3DAngle(kx: $0.kx, ky: $0.ky, kz: kz, phases: $0.phases, m1: m1, m2: m2)
            }
        }
        var angles: [SIM3DAngle] = []
        for (a, (e, p)) in zip(projected.angles, priors).enumerated() {
            var angle = SIM3DAngle(
                kx: e.kx, ky: e.ky, kz: p.kz, phases: Self.equidistantPhases(fitting: e.phases), m1: p.m1, m2: p.m2)
            // The absolute phase and the modulations in 3D, where the bands' OTFs are known (in the
            // projection order 1's phase is weighted by the specimen's axial structure at ±kz), also
            // when the projection's estimate was not trusted and the prior's k is used: the prior
            // knows the phase steps but not where the pattern lies on the specimen. (The projection
            // can lose order 1 altogether: its axial modulation cos 2πk_z z sums to nearly nothing
            // over a stack about one axial period deep.)
            if let fit = try? regress(stacks[a], angle) {
                let (c1, c2) = fit
                if hypot(c1.re, c1.im) > 0 {
                    let delta = Double(atan2(c1.im, c1.re))
                    angle.phases = angle.phases.map { $0 + delta }
                    angle.m1 = 2 * Double(hypot(c1.re, c1.im))
                }
                if hypot(c2.re, c2.im) > 0 { angle.m2 = 2 * Double(hypot(c2.re, c2.im)) }
                // Keep the prior's modulations when the fit is implausible (noise, no structure).
                if !(0.05...1.5).contains(angle.m1) { angle.m1 = p.m1 }
                if !(0.05...1.5).contains(angle.m2) { angle.m2 = p.m2 }
            }
            angles.append(angle)
        }
        return SIM3DEstimate(angles: angles, projected: projected)
    }

    /// The equidistant phase steps (2π/P apart, stepping up or down) closest to per-frame phase
    /// estimates: φ_p = φ₀ ± 2πp/P, with φ₀ = arg Σ_p e^{i(φ̂_p ∓ 2πp/P)} and the direction whose sum
    /// is longer. In the z-projection each frame's phase at k is pulled by order 2 (its e^{2iφ_p}
    /// term correlates with band 0 through the specimen), an error that oscillates once around the
    /// phases: it cancels in the sum, so the fitted steps keep the absolute phase and lose the bias.
    /// A three-beam pattern is stepped by the hardware (SLM, grating), not by the specimen.
    static func equidistantPhases(fitting estimated: [Double]) -> [Double] {
        let count = estimated.count
        guard count >= 3 else { return estimated }
        var best: (length: Double, start: Double, direction: Double) = (-1, 0, 1)
        for direction in [1.0, -1.0] {
            var re = 0.0
            var im = 0.0
            for (p, phase) in estimated.enumerated() {
                let residual = phase - direction * 2 * .pi * Double(p) / Double(count)
                re += cos(residual)
                im += sin(residual)
            }
            let length = hypot(re, im)
            if length > best.length { best = (length, atan2(im, re), direction) }
        }
        return (0..<count).map { best.start + best.direction * 2 * .pi * Double($0) / Double(count) }
    }

    /// Order 1's modulation in one orientation's phase stacks under `angle`'s parameters (2|c₁| of
    /// `regress`): it drops when the pattern has moved away from them (the live stage's `on-drop`).
    public func modulation(_ stacks: [[Float]], _ angle: SIM3DAngle) throws -> Double {
        let (c1, _) = try regress(stacks, angle)
        return 2 * Double(hypot(c1.re, c1.im))
    }

    /// Least-squares coefficients c₁, c₂ of the bands separated with `angle`'s phases against band 0
    /// in 3D: band m moved back by m·k is c_m·S̃·OTF_m and band 0 is S̃·OTF₀, so over the voxels where
    /// both OTFs are well above 0, c_m = Σ conj(B₀·OTF_m)·(Y_m·OTF₀) / Σ |B₀·OTF_m|² — its argument
    /// is the residual phase of order m (m·δ for a common offset δ), twice its magnitude the modulation.
    /// OTF₁ is the widefield OTF shifted axially by ±kz (averaged), OTF₂ the widefield OTF.
    func regress(_ stacks: [[Float]], _ angle: SIM3DAngle) throws -> (Complex32, Complex32) {
        let total = n * n * nz
        let plane = n * n
        let w = try weights(angle.phases)
        let taper = SIM2DReconstructor.makeTaper(width: n, height: n, edge: max(8, n / 8))
        let zTaper = axialTaper()
        let bg = Float(background)
        let b0 = AlignedBuffer<Complex32>(count: total)
        let c1 = AlignedBuffer<Complex32>(count: total)
        let c2 = AlignedBuffer<Complex32>(count: total)
        for i in 0..<total { b0[i] = .zero; c1[i] = .zero; c2[i] = .zero }
        for (p, s) in stacks.enumerated() {
            for z in 0..<nz {
                for i in 0..<plane {
                    let idx = z * plane + i
                    let v = (s[idx] - bg) * taper[i] * zTaper[z]
                    b0[idx].re += w[0][p] * v
                    c1[idx].re += w[1][p] * v; c1[idx].im += w[2][p] * v
                    c2[idx].re += w[3][p] * v; c2[idx].im += w[4][p] * v
                }
            }
        }
        // Band m moved to the origin by a full (sub-pixel) shift of m·k.
        for (m, c) in [(1.0, c1), (2.0, c2)] {
            for z in 0..<nz {
                for y in 0..<n {
                    for x in 0..<n {
                        let ang = -2 * Double.pi * m * (angle.kx * Double(x) + angle.ky * Double(y)) * pixelUm
                        let e = Complex32(Float(cos(ang)), Float(sin(ang)))
                        let i = (z * n + y) * n + x
                        let v = c[i]
                        c[i] = Complex32(v.re * e.re - v.im * e.im, v.re * e.im + v.im * e.re)
                    }
                }
            }
        }
        let s0 = AlignedBuffer<Complex32>(count: total)
        let s1 = AlignedBuffer<Complex32>(count: total)
        let s2 = AlignedBuffer<Complex32>(count: total)
        fwd.execute(b0.pointer, s0.pointer); fwd.execute(c1.pointer, s1.pointer); fwd.execute(c2.pointer, s2.pointer)
        let sx = Double(n) * pixelUm
        let sz = Double(nz) * dzUm
        let fc = optics.lateralCutoff
        @inline(__always) func sgn(_ u: Int, _ len: Int) -> Int { u < len / 2 ? u : u - len }
        var num1 = (0.0, 0.0)
        var den1 = 0.0
        var num2 = (0.0, 0.0)
        var den2 = 0.0
        for wz in 0..<nz {
            for v in 0..<n {
                for u in 0..<n {
                    let fx = Double(sgn(u, n)) / sx
                    let fy = Double(sgn(v, n)) / sx
                    let fz = Double(sgn(wz, nz)) / sz
                    let f = hypot(fx, fy)
                    guard f > 0.15 * fc else { continue }
                    let o0 = otf.value(kr: f, kz: fz)
                    guard o0 > 0.03 else { continue }
                    let i = (wz * n + v) * n + u
                    let r1 = hypot(fx + angle.kx, fy + angle.ky)
                    let r2 = hypot(fx + 2 * angle.kx, fy + 2 * angle.ky)
                    let o1 = 0.5 * (otf.value(kr: r1, kz: fz - angle.kz) + otf.value(kr: r1, kz: fz + angle.kz))
                    let o2 = otf.value(kr: r2, kz: fz)
                    let a = s0[i]
                    if o1 > 0.03 {
                        let xr = Double(a.re) * o1
                        let xi = Double(a.im) * o1
                        let yr = Double(s1[i].re) * o0
                        let yi = Double(s1[i].im) * o0
                        num1.0 += xr * yr + xi * yi; num1.1 += xr * yi - xi * yr; den1 += xr * xr + xi * xi
                    }
                    if o2 > 0.03 {
                        let xr = Double(a.re) * o2
                        let xi = Double(a.im) * o2
                        let yr = Double(s2[i].re) * o0
                        let yi = Double(s2[i].im) * o0
                        num2.0 += xr * yr + xi * yi; num2.1 += xr * yi - xi * yr; den2 += xr * xr + xi * xi
                    }
                }
            }
        }
        let c1fit = den1 > 0 ? Complex32(Float(num1.0 / den1), Float(num1.1 / den1)) : .zero
        let c2fit = den2 > 0 ? Complex32(Float(num2.0 / den2), Float(num2.1 / den2)) : .zero
        return (c1fit, c2fit)
    }

    /// The axial fade of the outer planes (the stack's top and bottom do not wrap into each other).
    func axialTaper() -> [Float] {
        let zEdge = max(2, nz / 8)
        return (0..<nz).map { z in
            let d = min(z, nz - 1 - z)
            return d >= zEdge ? 1 : Float(0.5 - 0.5 * cos(Double.pi * (Double(d) + 0.5) / Double(zEdge)))
        }
    }
}
