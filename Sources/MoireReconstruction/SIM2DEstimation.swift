import Foundation
import MoireCore
import MoireFFT

extension SIM2DReconstructor {
    /// `Σ_r p(r)·e^{−i2π(kx·x + ky·y)·Δ}` at any (sub-pixel) wave vector, separably.
    func dft(_ p: [Complex32], kx: Double, ky: Double) -> (re: Double, im: Double) {
        var ex = [Complex32](repeating: .zero, count: width)
        for x in 0..<width {
            let a = -2 * Double.pi * kx * Double(x) * pixelUm; ex[x] = Complex32(Float(cos(a)), Float(sin(a)))
        }
        var re = 0.0
        var im = 0.0
        p.withUnsafeBufferPointer { pp in
            for y in 0..<height {
                var rr: Float = 0
                var ri: Float = 0
                let row = y * width
                for x in 0..<width {
                    let a = pp[row + x]
                    let e = ex[x]
                    rr += a.re * e.re - a.im * e.im
                    ri += a.re * e.im + a.im * e.re
                }
                let b = -2 * Double.pi * ky * Double(y) * pixelUm
                let c = cos(b)
                let s = sin(b)
                re += Double(rr) * c - Double(ri) * s
                im += Double(rr) * s + Double(ri) * c
            }
        }
        return (re, im)
    }

    /// The image filtered by the OTF (times an optional low-frequency notch), back in real space.
    func otfFiltered(_ image: [Complex32], notchSigma: Double = 0) -> [Complex32] {
        for i in 0..<n { bufA[i] = image[i] }
        fwd.execute(bufA.pointer, bufB.pointer)
        let s = 1 / Float(n)
        for v in 0..<height {
            for u in 0..<width {
                let (fx, fy) = freq(u, v, w: width, h: height, scale: pixelUm)
                let f2 = fx * fx + fy * fy
                let o = otf.value(f2.squareRoot())
                var g = o > 0 ? pow(o, options.estimationFilterPower) : 0
                if notchSigma > 0 { g *= 1 - exp(-f2 / (2 * notchSigma * notchSigma)) }
                let i = v * width + u
                bufB[i] = Complex32(bufB[i].re * Float(g) * s, bufB[i].im * Float(g) * s)
            }
        }
        inv.execute(bufB.pointer, bufA.pointer)
        return Array(bufA.buffer)
    }

    /// Absolute pattern phase of one frame at wave vector k (Wicker's autocorrelation: arg Σ h(r)²·e^{−i2πk·r}).
    func framePhase(_ frame: [Float], kx: Double, ky: Double) -> Double {
        let bg = Float(options.background)
        let h = otfFiltered((0..<n).map { Complex32((frame[$0] - bg) * taper[$0], 0) })
        let q = h.map { Complex32($0.re * $0.re, 0) }
        let d = dft(q, kx: kx, ky: ky)
        return atan2(d.im, d.re)
    }

    /// The band-0 × band-1 correlation of one orientation: `p(r) = conj(g0)·g1` (filtered bands) and its
    /// transform, whose magnitude peaks at the pattern's wave vector (integer spectral pixels).
    func correlationMap(_ frames: ArraySlice<[Float]>, relativePhases: [Double]) -> (p: [Complex32], map: [Complex32]) {
        let (b0, c1) = separate(frames, phases: relativePhases)
        let g0 = otfFiltered(b0.map { Complex32($0, 0) }, notchSigma: options.estimationNotch * otf.cutoff)
        let g1 = otfFiltered(c1)
        var p = [Complex32](repeating: .zero, count: n)
        for i in 0..<n {
            p[i] = Complex32(g0[i].re * g1[i].re + g0[i].im * g1[i].im, g0[i].re * g1[i].im - g0[i].im * g1[i].re)
        }
        for i in 0..<n { bufA[i] = p[i] }
        fwd.execute(bufA.pointer, bufB.pointer)
        return (p, Array(bufB.buffer))
    }

    /// Finds the orientation θ and |k| on the ring around 1/period that best explains all
    /// orientations at once (they are 180°/angles apart), then returns per-angle priors there.
    func jointRingSearch(_ frames: [[Float]], periodUm: Double, modulation: Double) -> [PatternPrior] {
        let equidistant = (0..<phases).map { 2 * Double.pi * Double($0) / Double(phases) }
        let sx = Double(width) * pixelUm
        let sy = Double(height) * pixelUm
        let k0 = 1 / periodUm
        var maps: [[Float]] = []
        for a in 0..<angles {
            let m = correlationMap(frames[(a * phases)..<((a + 1) * phases)], relativePhases: equidistant).map
            var mag = m.map { hypot($0.re, $0.im) }
            // Normalise by the mean over the search ring, so every orientation counts alike.
            var sum: Float = 0
            var cnt = 0
            for v in 0..<height {
                for u in 0..<width {
                    let fu = Double(signed(u, width)) / sx
                    let fv = Double(signed(v, height)) / sy
                    let r = hypot(fu, fv)
                    if r > 0.95 * k0 && r < 1.05 * k0 { sum += mag[v * width + u]; cnt += 1 }
                }
            }
            let mean = cnt > 0 ? sum / Float(cnt) : 1
            for i in 0..<n { mag[i] /= max(mean, 1e-30) }
            maps.append(mag)
        }
        func at(_ m: [Float], _ kx: Double, _ ky: Double) -> Float {
            // Bilinear in spectral pixels; the larger of k and −k (either may carry band +1).
            func one(_ x: Double, _ y: Double) -> Float {
                let x0 = Int(floor(x))
                let y0 = Int(floor(y))
                let tx = Float(x - Double(x0))
                let ty = Float(y - Double(y0))
                func g(_ u: Int, _ v: Int) -> Float {
                    m[((v % height) + height) % height * width + ((u % width) + width) % width]
                }
                return (1 - ty) * ((1 - tx) * g(x0, y0) + tx * g(x0 + 1, y0)) + ty
                    * ((1 - tx) * g(x0, y0 + 1) + tx * g(x0 + 1, y0 + 1))
            }
            return max(one(kx * sx, ky * sy), one(-kx * sx, -ky * sy))
        }
        var best: (score: Float, theta: Double, r: Double, sense: Double) = (-1, 0, k0, 1)
        let step = 0.5 / (k0 * sx)  // half a spectral pixel along the ring, in radians
        for sense in [1.0, -1.0] {
            var theta = 0.0
            while theta < Double.pi {
                var r = 0.97 * k0
                while r <= 1.03 * k0 {
                    var score: Float = 0
                    for a in 0..<angles {
                        let th = theta + sense * Double(a) * .pi / Double(angles)
                        score += at(maps[a], r * cos(th), r * sin(th))
                    }
                    if score > best.score { best = (score, theta, r, sense) }
                    r += 0.5 / sx
                }
                theta += step
            }
        }
        return (0..<angles).map { a in
            let th = best.theta + best.sense * Double(a) * .pi / Double(angles)
            let kx = best.r * cos(th)
            let ky = best.r * sin(th)
            // Keep the sign whose correlation is stronger.
            let m = maps[a]
            func g(_ x: Double, _ y: Double) -> Float {
                m[
                    ((Int((y * sy).rounded()) % height) + height) % height * width
                        + ((Int((x * sx).rounded()) % width) + width) % width]
            }
            let sign = g(kx, ky) >= g(-kx, -ky) ? 1.0 : -1.0
            return PatternPrior(kx: sign * kx, ky: sign * ky, phases: equidistant, modulation: modulation)
        }
    }

    /// Absolute pattern phase of every frame of one orientation at wave vector k.
    ///
    /// Each OTF-filtered frame is cross-correlated at k with the OTF-filtered mean of the frames
    /// (band 0): `X_p = Σ_r conj(g0)·h_p·e^{−i2πk·r} = A·e^{iφ_p} + L`, where the leak L of band 0
    /// is the same for every frame. Removing the mean over p removes L (exactly for equidistant
    /// phases, to second order near them), so `φ_p = arg(X_p − mean X)`.
    func framePhases(_ frames: ArraySlice<[Float]>, kx: Double, ky: Double) -> [Double] {
        let bg = Float(options.background)
        var mean = [Complex32](repeating: .zero, count: n)
        for f in frames { for i in 0..<n { mean[i].re += (f[i] - bg) * taper[i] } }
        let s = 1 / Float(frames.count)
        for i in 0..<n { mean[i].re *= s }
        let g0 = otfFiltered(mean)
        var xs: [(Double, Double)] = []
        for f in frames {
            let h = otfFiltered((0..<n).map { Complex32((f[$0] - bg) * taper[$0], 0) })
            var q = [Complex32](repeating: .zero, count: n)
            for i in 0..<n {
                q[i] = Complex32(g0[i].re * h[i].re + g0[i].im * h[i].im, g0[i].re * h[i].im - g0[i].im * h[i].re)
            }
            let d = dft(q, kx: kx, ky: ky)
            xs.append((d.re, d.im))
        }
        let mr = xs.map(\.0).reduce(0, +) / Double(xs.count)
        let mi = xs.map(\.1).reduce(0, +) / Double(xs.count)
        return xs.map { atan2($0.1 - mi, $0.0 - mr) }
    }

    /// Estimates with a prior given only as the pattern period: the orientations, 180°/angles apart,
    /// are found together on the ring |k| = 1/period (±3 %), each is then refined on its own and
    /// checked like `estimate(_:priors:)` (against the joint solution).
    public func estimate(_ frames: [[Float]], periodUm: Double, modulation: Double = 0.7) throws -> SIMParameters {
        try check(frames)
        guard periodUm > 0 else { throw MoireError(.usage, "pattern period must be positive") }
        let priors = jointRingSearch(frames, periodUm: periodUm, modulation: modulation)
        var o = options
        o.searchRadiusPx = 2
        let saved = options
        options = o
        defer { options = saved }
        return try estimate(frames, priors: priors)
    }

    /// Estimates every orientation's parameters, seeded by `priors` (one per angle) when given,
    /// blind otherwise. Untrustworthy estimates fall back to the prior and are flagged.
    public func estimate(_ frames: [[Float]], priors: [PatternPrior]?) throws -> SIMParameters {
        try check(frames)
        if let priors, priors.count != angles {
            throw MoireError(.usage, "\(priors.count) pattern priors given for \(angles) angles")
        }
        var out: [SIMAngleParameters] = []
        var taken: [(Double, Double)] = []
        for a in 0..<angles {
            let slice = frames[(a * phases)..<((a + 1) * phases)]
            let prior = priors?[a]
            let equidistant = (0..<phases).map { 2 * Double.pi * Double($0) / Double(phases) }
            let relPhases = prior.map { p in p.phases.map { $0 - p.phases[0] } } ?? equidistant
            out.append(try estimateAngle(slice, prior: prior, relativePhases: relPhases, exclude: taken))
            taken.append((out[a].kx, out[a].ky))
        }
        return SIMParameters(angles: out)
    }

    private func estimateAngle(
        _ frames: ArraySlice<[Float]>, prior: PatternPrior?, relativePhases: [Double],
        exclude: [(Double, Double)], ring: ClosedRange<Double>? = nil
    ) throws -> SIMAngleParameters {
        let fc = otf.cutoff
        let (p, map) = correlationMap(frames, relativePhases: relativePhases)
        for i in 0..<n { bufB[i] = map[i] }
        let sx = Double(width) * pixelUm
        let sy = Double(height) * pixelUm  // px per (cycle/µm)
        var candidates: [(u: Int, v: Int)] = []
        if let prior {
            let r = options.searchRadiusPx
            for sign in [1.0, -1.0] {
                let cu = sign * prior.kx * sx
                let cv = sign * prior.ky * sy
                for dv in Int(-r - 1)...Int(r + 1) {
                    for du in Int(-r - 1)...Int(r + 1) {
                        let u = Int(cu.rounded()) + du
                        let v = Int(cv.rounded()) + dv
                        if hypot(Double(u) - cu, Double(v) - cv) <= r { candidates.append((u, v)) }
                    }
                }
            }
        } else {
            let rmin = (ring?.lowerBound ?? 0.5 * fc) * sx
            let rmax = (ring?.upperBound ?? 1.05 * fc) * sx
            for v in -height / 2..<height / 2 {
                for u in -width / 2..<width / 2 {
                    let r = hypot(Double(u), Double(v) * sx / sy)
                    guard r >= rmin, r <= rmax else { continue }
                    // Skip the orientations already found (and their mirrors).
                    if exclude.contains(where: { e in
                        let d1 = hypot(Double(u) - e.0 * sx, Double(v) - e.1 * sy)
                        let d2 = hypot(Double(u) + e.0 * sx, Double(v) + e.1 * sy)
                        return min(d1, d2) < 6
                    }) {
                        continue
                    }
                    candidates.append((u, v))
                }
            }
        }
        func mag(_ u: Int, _ v: Int) -> Double {
            let i = ((v % height) + height) % height * width + ((u % width) + width) % width
            return Double(hypot(bufB[i].re, bufB[i].im))
        }
        // Flatten the radial fall-off of the correlation, so a peak stands out over its own ring
        // (with a prior too: the object's own spectrum rises toward the origin across the search
        // window, and a weak pattern peak lost to the window's inner edge, 8 % short of |k|).
        var ringMean: [Double] = []
        do {
            let rings = max(width, height)
            var sum = [Double](repeating: 0, count: rings)
            var cnt = [Double](repeating: 0, count: rings)
            for v in 0..<height {
                for u in 0..<width {
                    let r = Int(hypot(Double(signed(u, width)), Double(signed(v, height)) * sx / sy).rounded())
                    if r < rings { sum[r] += mag(u, v); cnt[r] += 1 }
                }
            }
            ringMean = zip(sum, cnt).map { $1 > 0 ? max($0 / $1, 1e-30) : 1e-30 }
        }
        func rank(_ c: (u: Int, v: Int)) -> Double {
            let r = Int(hypot(Double(c.u), Double(c.v) * sx / sy).rounded())
            return mag(c.u, c.v) / ringMean[min(r, ringMean.count - 1)]
        }
        /// A local maximum of the correlation's magnitude (a peak, not a slope cut by the window).
        func isPeak(_ c: (u: Int, v: Int)) -> Bool {
            let m = mag(c.u, c.v)
            for dv in -1...1 {
                for du in -1...1 where (du != 0 || dv != 0) && mag(c.u + du, c.v + dv) > m {
                    return false
                }
            }
            return true
        }
        let peaks = prior == nil ? candidates : candidates.filter(isPeak)
        guard let best = (peaks.isEmpty ? candidates : peaks).max(by: { rank($0) < rank($1) }) else {
            throw MoireError(.numeric, "no candidate wave vectors to search (image too small for the OTF?)")
        }
        // Background: the correlation's mean magnitude 3…10 spectral pixels from the peak.
        var bgSum = 0.0
        var bgCount = 0
        for dv in -10...10 {
            for du in -10...10 {
                let d = hypot(Double(du), Double(dv))
                if d >= 3 && d <= 10 { bgSum += mag(best.u + du, best.v + dv); bgCount += 1 }
            }
        }
        let bgMean = max(bgSum / Double(max(bgCount, 1)), 1e-30)
        // Fine: descend on |X(k)| from the integer peak.
        func score(_ k: (Double, Double)) -> Double { let d = dft(p, kx: k.0, ky: k.1); return hypot(d.re, d.im) }
        let peak = (Double(best.u) / sx, Double(best.v) / sy)
        let compass: [(Double, Double)] = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]
        let climbed = PatternSearch.minimise(
            from: peak, cost: -score(peak), firstStep: 0.5, finest: 0.002, directions: compass.count,
            move: { k, direction, step in
                (k.0 + compass[direction].0 * step / sx, k.1 + compass[direction].1 * step / sy)
            },
            cost: { -score($0) })
        let (kx, ky) = climbed.point
        let confidence = -climbed.cost / bgMean
        // Per-frame phases at this k, then separation with them and the modulation.
        var result = try refine(frames, kx: kx, ky: ky, confidence: confidence, source: "estimated")
        if let prior {
            result = try betterOfPeakAndPrior(frames, peak: result, prior: prior)
        }
        // Trust checks against the prior.
        var reasons: [String] = []
        if confidence < options.minConfidence {
            reasons.append(String(format: "weak correlation peak (%.1f < %.1f)", confidence, options.minConfidence))
        }
        if result.modulation < 0.05 || result.modulation > 1.5 {
            reasons.append(String(format: "implausible modulation %.3f", result.modulation))
        }
        if let prior {
            let pk = (prior.kx * prior.kx + prior.ky * prior.ky).squareRoot()
            let dk = abs(result.kMagnitude - pk) / pk
            if dk > options.maxKDeviation {
                reasons.append(
                    String(format: "|k| %.4f µm⁻¹ is %.1f%% from the prior %.4f", result.kMagnitude, dk * 100, pk))
            }
            var da = abs(
                result.angleDeg
                    - SIMAngleParameters(
                        kx: prior.kx, ky: prior.ky, phases: [], modulation: 0, confidence: 0,
                        source: "", flagged: false
                    ).angleDeg)
            da = min(da, 180 - da)
            if da > options.maxAngleDeviationDeg {
                reasons.append(String(format: "orientation %.2f° from the prior", da))
            }
            if !reasons.isEmpty {
                // Fall back to the prior's wave vector (sign as found), phases measured there, prior modulation.
                let sign = (result.kx * prior.kx + result.ky * prior.ky) >= 0 ? 1.0 : -1.0
                result = try refine(
                    frames, kx: sign * prior.kx, ky: sign * prior.ky, confidence: confidence, source: "prior")
                reasons.append(String(format: "modulation measured at the prior's k %.3f", result.modulation))
                result.modulation = prior.modulation
                result.flagged = true
                result.reason = reasons.joined(separator: "; ")
            }
        } else if !reasons.isEmpty {
            result.flagged = true
            result.reason = reasons.joined(separator: "; ") + " (no prior to fall back to)"
        }
        return result
    }

    /// The estimate fitted from the prior's wave vector instead of the correlation map's peak, where
    /// the two are further apart than the fit reaches and the bands agree better there.
    ///
    /// On sparse data near the cutoff the map can hold a false peak a pixel or more from the pattern
    /// that stands just above the trust threshold (a harness scene at 500 photons: 1.3 spectral
    /// pixels off, confidence 6.6, 1 dB lost). The bands agree only at the true k, so the fit is
    /// also started at the prior (the sign as found) and the start whose bands agree better is
    /// kept, when that agreement passes the fit's gate (on data where the bands barely agree,
    /// such as the shared microtubules, the peak stands).
    func betterOfPeakAndPrior(
        _ frames: ArraySlice<[Float]>, peak: SIMAngleParameters, prior: PatternPrior
    ) throws -> SIMAngleParameters {
        let sign = (peak.kx * prior.kx + peak.ky * prior.ky) >= 0 ? 1.0 : -1.0
        let priorX = sign * prior.kx
        let priorY = sign * prior.ky
        guard spectralPixels(peak.kx - priorX, peak.ky - priorY) > Self.largestWaveVectorCorrection else { return peak }
        let atPrior = try refine(frames, kx: priorX, ky: priorY, confidence: peak.confidence, source: "estimated")
        let gate = 1 - Self.largestMismatchToFit
        guard let agreement = atPrior.bandAgreement, agreement >= gate, agreement > (peak.bandAgreement ?? 0) else {
            return peak
        }
        return atPrior
    }

    /// Phases per frame at k, then the band separation with them, the residual phase and the modulation.
    func refine(
        _ frames: ArraySlice<[Float]>, kx peakX: Double, ky peakY: Double, confidence: Double, source: String
    ) throws -> SIMAngleParameters {
        var kx = peakX
        var ky = peakY
        var phis = framePhases(frames, kx: kx, ky: ky)
        var agreement: Double?
        if source == "estimated" {
            (kx, ky, phis, agreement) = overlapFit(frames, kx: kx, ky: ky, phases: phis)
        }
        // Unwrap relative to the first for readability.
        for i in 1..<phis.count {
            while phis[i] < phis[0] { phis[i] += 2 * .pi }; while phis[i] >= phis[0] + 2 * .pi { phis[i] -= 2 * .pi }
        }
        let (b0, c1) = separate(frames, phases: phis)
        // Band +1 moved to the origin by a full (sub-pixel) shift: its spectrum is (m/2)·S̃(f)·O(f+k).
        for y in 0..<height {
            for x in 0..<width {
                let a = -2 * Double.pi * (kx * Double(x) + ky * Double(y)) * pixelUm
                let c = Float(cos(a))
                let s = Float(sin(a))
                let v = c1[y * width + x]
                bufA[y * width + x] = Complex32(v.re * c - v.im * s, v.re * s + v.im * c)
            }
        }
        let y1 = AlignedBuffer<Complex32>(count: n)
        fwd.execute(bufA.pointer, y1.pointer)
        for i in 0..<n { bufA[i] = Complex32(b0[i], 0) }
        fwd.execute(bufA.pointer, bufB.pointer)
        let fc = otf.cutoff
        let model = bandModel(band0: bufB)
        // The noise of band 0 inflates Σ|x|² (regression dilution): its expected part is taken out.
        let noise = model?.noisePower ?? 0
        var numRe = 0.0
        var numIm = 0.0
        var den = 0.0
        var noiseInDen = 0.0
        for v in 0..<height {
            for u in 0..<width {
                let (fx, fy) = freq(u, v, w: width, h: height, scale: pixelUm)
                let f = hypot(fx, fy)
                guard f > 0.15 * fc else { continue }
                let o0 = otf.value(f)
                let ok = otf.value(hypot(fx + kx, fy + ky))
                guard o0 > 0.03, ok > 0.03 else { continue }
                let i = v * width + u
                let pk = pixelTransfer(fx + kx, fy + ky)
                let p0 = pixelTransfer(fx, fy)
                let xr = Double(bufB[i].re) * ok * pk
                let xi = Double(bufB[i].im) * ok * pk
                let yr = Double(y1[i].re) * o0 * p0
                let yi = Double(y1[i].im) * o0 * p0
                numRe += xr * yr + xi * yi; numIm += xr * yi - xi * yr
                den += xr * xr + xi * xi
                noiseInDen += noise * ok * ok * pk * pk
            }
        }
        let signalInDen = max(den - noiseInDen, 0.25 * den)
        var modulation = 0.0
        var psi = 0.0
        if den > 0 { modulation = 2 * hypot(numRe, numIm) / signalInDen; psi = atan2(numIm, numRe) }
        var result = SIMAngleParameters(
            kx: kx, ky: ky, phases: phis.map { $0 + psi }, modulation: modulation,
            confidence: confidence, source: source, flagged: false, reason: nil)
        result.bandAgreement = agreement
        result.orderLeak = model.map {
            orderLeak(model: $0, band0: bufB, shiftedBand: y1, kx: kx, ky: ky, modulation: modulation)
        }
        return result
    }

    /// The camera pixels' transfer at (fx, fy), where the OTF leaves it out: the image is integrated
    /// over square pixels, which weakens band +1 (recorded at f + k) more than band 0 (at f).
    func pixelTransfer(_ fx: Double, _ fy: Double) -> Double {
        if otf.includesPixelIntegration { return 1 }
        func sinc(_ t: Double) -> Double { t == 0 ? 1 : sin(Double.pi * t) / (Double.pi * t) }
        return sinc(fx * pixelUm) * sinc(fy * pixelUm)
    }

    /// How many times the predicted power band +1 may hold near its origin before it counts as a leak.
    static let leakTolerance = 3.0

    /// The spectral model (signal power law, noise beyond the OTF support) of one orientation's band 0 spectrum.
    func bandModel(band0: AlignedBuffer<Complex32>) -> SpectralModel? {
        let fc = otf.cutoff
        var power = [Float](repeating: 0, count: n)
        var rho = [Float](repeating: 0, count: n)
        var transfer = [Float](repeating: 0, count: n)
        for v in 0..<height {
            for u in 0..<width {
                let i = v * width + u
                let (fx, fy) = freq(u, v, w: width, h: height, scale: pixelUm)
                let f = hypot(fx, fy)
                power[i] = band0[i].re * band0[i].re + band0[i].im * band0[i].im
                rho[i] = Float(f / fc)
                transfer[i] = Float(otf.value(f))
            }
        }
        return power.withUnsafeBufferPointer { SpectralModel.fit(power: $0, rho: rho, otf: transfer, orientations: 1) }
    }

    /// The Wiener attenuation of band +1 around its raw-spectrum origin, ring by ring (one spectral
    /// pixel wide, out to the suppression's FWHM): in each ring the power the in-focus signal and
    /// the noise predict, `(m/2)²·OTF(f)²·P(f − k) + noise` (P and the noise from the spectral model
    /// of band 0, or band 0 itself where it shows more), is compared with the power measured; where the measured power exceeds the
    /// prediction by more than `leakTolerance` times, the ring is attenuated to the prediction; 1 elsewhere.
    ///
    /// - Parameters:
    ///   - model: the spectral model of this orientation's band 0.
    ///   - band0: the spectrum of this orientation's band 0 (where the OTF passes enough of the
    ///     object frequencies concerned, their power is read from it when above the model's: an
    ///     anisotropic object, filaments, departs from any radial law).
    ///   - shiftedBand: the spectrum of band +1 moved to the origin (object frequency F at index F).
    func orderLeak(
        model: SpectralModel, band0: AlignedBuffer<Complex32>, shiftedBand: AlignedBuffer<Complex32>,
        kx: Double, ky: Double, modulation: Double
    ) -> OrderLeak {
        let fc = otf.cutoff
        let step = 1 / (Double(max(width, height)) * pixelUm)
        let rings = Int((options.suppressionFWHM / step).rounded(.up)) + 1
        var measured = [Double](repeating: 0, count: rings)
        var predicted = [Double](repeating: 0, count: rings)
        var samples = [Int](repeating: 0, count: rings)
        let halfModulation = modulation / 2
        for v in 0..<height {
            for u in 0..<width {
                let (fx, fy) = freq(u, v, w: width, h: height, scale: pixelUm)
                let raw = hypot(fx + kx, fy + ky)
                let ring = Int((raw / step).rounded())
                guard ring < rings else { continue }
                let value = shiftedBand[v * width + u]
                measured[ring] += Double(value.re * value.re + value.im * value.im)
                let h = halfModulation * otf.value(raw)
                let object = hypot(fx, fy)
                var signal = model.amplitude * pow(max(object / fc, 1e-3), -model.exponent)
                let transfer = otf.value(object)
                if transfer > 0.05 {
                    let b = band0[v * width + u]
                    let measuredSignal = (Double(b.re * b.re + b.im * b.im) - model.noisePower) / (transfer * transfer)
                    signal = max(signal, measuredSignal)
                }
                predicted[ring] += h * h * signal + model.noisePower
                samples[ring] += 1
            }
        }
        let measuredRatio = (0..<rings).map { r -> Double in
            guard samples[r] > 0, measured[r] > 0 else { return 1 }
            // The power law is only a model of the object's spectrum, and a ring holds few samples:
            // up to `leakTolerance` times the prediction plus three chi-square spreads (1/√N) is
            // not yet a leak. Above it, the band is brought down to the prediction (a Wiener weight).
            let tolerance = Self.leakTolerance + 3 / Double(samples[r]).squareRoot()
            let excess = measured[r] / predicted[r]
            return excess > tolerance ? 1 / excess : 1
        }
        // A leak falls off away from the origin: each ring is attenuated at least as much as any
        // ring outside it (the few samples of the inner rings are noisy); the attenuation is
        // faded out over the outer half of the range, so the band has no step at its edge.
        var attenuation = measuredRatio
        for r in stride(from: rings - 2, through: 0, by: -1) {
            attenuation[r] = min(attenuation[r], attenuation[r + 1])
        }
        let fadeStart = Double(rings - 1) / 2
        for r in 0..<rings where Double(r) > fadeStart {
            let t = (Double(r) - fadeStart) / (Double(rings - 1) - fadeStart)
            let keep = 0.5 + 0.5 * cos(Double.pi * t)
            attenuation[r] = 1 - (1 - attenuation[r]) * keep
        }
        return OrderLeak(ringStep: step, attenuation: attenuation)
    }
}
