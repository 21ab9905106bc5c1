import Foundation
import MoireCore
import MoireFFT

/// A complex spectral sample in double precision.
typealias SpectralSample = (re: Double, im: Double)

/// Where band +1 and band 0 of one orientation overlap, and the frames' spectra there: what
/// `overlapFit` compares for every trial wave vector and phases.
///
/// The region and its weights are fixed from the starting wave vector for the whole search:
/// `y(F) = Y₊(F)·O(F)·P(F)` on band +1's side and `x(F) = B₀(F)·O(F+k)·P(F+k)` on band 0's
/// (P the pixels' transfer), so that for the true parameters y = (m/2)·e^{iψ}·x.
struct BandOverlap {
    /// Spectrum indices in the overlap.
    var indices: [Int] = []
    /// O(F)·P(F): the weight of the shifted spectra (band +1's side).
    var shiftedWeights: [Double] = []
    /// O(F+k)·P(F+k): the weight of the unshifted spectra (band 0's side).
    var band0Weights: [Double] = []
    /// The frames, background taken off and edges faded (as complex images, for the transforms).
    var tapered: [[Complex32]] = []
    /// Each frame's weighted spectrum over the overlap, unshifted.
    var band0Spectra: [[SpectralSample]] = []

    var count: Int { indices.count }
}

/// Gram matrix G[a][b] = Σ_F conj(z_a)·z_b over the overlap, of the frames' shifted spectra
/// (indices 0..<frames) and their unshifted ones (frames..<2·frames).
struct OverlapGram {
    var re: [[Double]]
    var im: [[Double]]
}

extension SIM2DReconstructor {
    /// `overlapFit` runs where band +1 and band 0 correlate with |ρ|² ≥ 1 − this over the overlap
    /// (the fidelity harness: 0.03–0.1 at 2000 photons, 0.3–0.8 at 100, ≥ 0.94 at 30 and on the
    /// shared real microtubules).
    static let largestMismatchToFit = 0.5
    /// How far `overlapFit` may move a phase from the correlation's (rad).
    static let largestPhaseCorrection = 40 * Double.pi / 180
    /// The finest step of `overlapFit`'s search on k (spectral pixels): a phase drift of 1.8°
    /// across the field.
    static let finestWaveVectorStep = 0.005
    /// How far `overlapFit` may move k from the correlation map's peak (spectral pixels).
    static let largestWaveVectorCorrection = 0.3

    /// The wave vector and the relative phases of one orientation that make its bands agree where
    /// they overlap.
    ///
    /// The correlation map's peak and `framePhases` are biased where the data are sparse or |k| is
    /// near the cutoff: the map's magnitude is weighted by how much of the object's spectrum the
    /// thin overlap holds, which falls as |k| grows (the peak is pulled short of k), and band −1 of
    /// each frame enters its correlation with band 0 with the opposite phase, as strongly as the
    /// object's spectrum correlates with itself 2k away (sparse puncta: several degrees). Here k and
    /// the phases are chosen instead so that band +1, separated with the phases and moved to the
    /// origin by k, is band 0 times one complex factor wherever the OTF passes both, by their
    /// normalised correlation |⟨x, y⟩|² / (⟨x, x⟩·⟨y, y⟩) (`BandOverlap`), which by Cauchy–Schwarz
    /// is 1 only where the bands match and does not reward moving band +1's energy into or out of
    /// the overlap. k is searched with the phases held (one transform per trial), then the phases
    /// at the new k (one Gram matrix of the frames' overlap spectra serves every trial), twice.
    /// The fit runs only where the bands correlate (`largestMismatchToFit`) and stays within
    /// `largestWaveVectorCorrection` and `largestPhaseCorrection` of where it starts; an optimum
    /// at the edge of that range is not one the in-focus model of the frames explains, and then
    /// the correlation's k and phases stand.
    func overlapFit(_ frames: ArraySlice<[Float]>, kx: Double, ky: Double, phases initial: [Double])
        -> (kx: Double, ky: Double, phases: [Double], agreement: Double?)
    {
        guard frames.count >= 3 else { return (kx, ky, initial, nil) }
        let overlap = bandOverlap(frames, kx: kx, ky: ky)
        guard overlap.count > 0 else { return (kx, ky, initial, nil) }
        var phases = initial
        var k = (kx, ky)
        var gram = overlapGram(overlap, shiftedBy: k)
        var best = mismatch(overlap, gram, phases: phases)
        let unchanged = (kx: kx, ky: ky, phases: initial, agreement: Optional(1 - best))
        // Where noise (or what the in-focus model leaves out) dominates the overlap, the fit would
        // follow it: the correlation's k and phases stand.
        guard best <= Self.largestMismatchToFit else { return unchanged }
        best = searchPhases(overlap, gram, phases: &phases, from: initial, mismatch: best)
        for firstStep in [0.04, 0.01] {
            best = searchWaveVector(
                overlap, frames: frames, phases: phases, k: &k, from: (kx, ky), firstStep: firstStep, mismatch: best)
            gram = overlapGram(overlap, shiftedBy: k)
            best = mismatch(overlap, gram, phases: phases)
            best = searchPhases(overlap, gram, phases: &phases, from: initial, mismatch: best)
        }
        let kOffset = spectralPixels(k.0 - kx, k.1 - ky)
        let kAtTheEdge = kOffset > 0.97 * Self.largestWaveVectorCorrection
        let phaseAtTheEdge = zip(phases, initial).contains { abs($0 - $1) > 0.99 * Self.largestPhaseCorrection }
        if kAtTheEdge || phaseAtTheEdge { return unchanged }
        return (k.0, k.1, phases, 1 - best)
    }

    /// The length of a wave-vector difference in spectral pixels of this frame.
    func spectralPixels(_ dx: Double, _ dy: Double) -> Double {
        hypot(dx * Double(width) * pixelUm, dy * Double(height) * pixelUm)
    }

    /// The overlap of one orientation's bands at wave vector (kx, ky), with the frames' unshifted
    /// spectra there.
    func bandOverlap(_ frames: ArraySlice<[Float]>, kx: Double, ky: Double) -> BandOverlap {
        let fc = otf.cutoff
        let bg = Float(options.background)
        var overlap = BandOverlap()
        for v in 0..<height {
            for u in 0..<width {
                let (fx, fy) = freq(u, v, w: width, h: height, scale: pixelUm)
                let f = hypot(fx, fy)
                let raw = hypot(fx + kx, fy + ky)
                // Each band's low frequencies hold the out-of-focus light, which the in-focus model
                // of the frames leaves out (and band +1's order centre, raw frequency 0, band 0's leak).
                guard f > 0.15 * fc, raw > 0.15 * fc else { continue }
                let o0 = otf.value(f)
                let ok = otf.value(raw)
                guard o0 > 0.03, ok > 0.03 else { continue }
                overlap.indices.append(v * width + u)
                overlap.shiftedWeights.append(o0 * pixelTransfer(fx, fy))
                overlap.band0Weights.append(ok * pixelTransfer(fx + kx, fy + ky))
            }
        }
        overlap.tapered = frames.map { frame in (0..<n).map { Complex32((frame[$0] - bg) * taper[$0], 0) } }
        overlap.band0Spectra = overlap.tapered.map { overlapSpectrum(overlap, of: $0, shiftedBy: nil) }
        return overlap
    }

    /// The weighted overlap spectrum of an image: shifted by `shift` for band +1's side, or as it
    /// is for band 0's.
    func overlapSpectrum(_ overlap: BandOverlap, of image: [Complex32], shiftedBy shift: (Double, Double)?)
        -> [SpectralSample]
    {
        if let (sx, sy) = shift {
            // e^{−i2π(sx·x + sy·y)} = rampX[x]·rampY[y]: one table per axis.
            let rampX = (0..<width).map { x -> Complex32 in
                let a = -2 * Double.pi * sx * Double(x) * pixelUm
                return Complex32(Float(cos(a)), Float(sin(a)))
            }
            let rampY = (0..<height).map { y -> Complex32 in
                let a = -2 * Double.pi * sy * Double(y) * pixelUm
                return Complex32(Float(cos(a)), Float(sin(a)))
            }
            for y in 0..<height {
                let row = y * width
                for x in 0..<width {
                    bufA[row + x] = image[row + x] * (rampX[x] * rampY[y])
                }
            }
        } else {
            for i in 0..<n { bufA[i] = image[i] }
        }
        fwd.execute(bufA.pointer, bufB.pointer)
        let weights = shift == nil ? overlap.band0Weights : overlap.shiftedWeights
        return overlap.indices.enumerated().map { j, i in
            (Double(bufB[i].re) * weights[j], Double(bufB[i].im) * weights[j])
        }
    }

    /// The Gram matrix of the frames' spectra shifted by `shift` and unshifted, over the overlap.
    func overlapGram(_ overlap: BandOverlap, shiftedBy shift: (Double, Double)) -> OverlapGram {
        let spectra =
            overlap.tapered.map { overlapSpectrum(overlap, of: $0, shiftedBy: shift) } + overlap.band0Spectra
        let size = spectra.count
        var gram = OverlapGram(
            re: [[Double]](repeating: [Double](repeating: 0, count: size), count: size),
            im: [[Double]](repeating: [Double](repeating: 0, count: size), count: size))
        for a in 0..<size {
            for b in a..<size {
                var sumRe = 0.0
                var sumIm = 0.0
                for j in 0..<overlap.count {
                    let za = spectra[a][j]
                    let zb = spectra[b][j]
                    sumRe += za.re * zb.re + za.im * zb.im
                    sumIm += za.re * zb.im - za.im * zb.re
                }
                gram.re[a][b] = sumRe
                gram.im[a][b] = sumIm
                gram.re[b][a] = sumRe
                gram.im[b][a] = -sumIm
            }
        }
        return gram
    }

    /// 1 − the normalised correlation of band +1 and band 0 separated with `phases`, from the Gram
    /// matrix: y = Σ c_p·(shifted spectrum p), x = Σ d_p·(unshifted spectrum p).
    func mismatch(_ overlap: BandOverlap, _ gram: OverlapGram, phases: [Double]) -> Double {
        let frames = phases.count
        let w = separationWeights(phases)
        let c = (0..<frames).map { (re: Double(w[1][$0]), im: Double(w[2][$0])) }
        let d = (0..<frames).map { Double(w[0][$0]) }
        var yy = 0.0
        var xx = 0.0
        var xyRe = 0.0
        var xyIm = 0.0
        for a in 0..<frames {
            for b in 0..<frames {
                // ⟨y, y⟩ += conj(c_a)·G[a][b]·c_b
                let gr = gram.re[a][b] * c[b].re - gram.im[a][b] * c[b].im
                let gi = gram.re[a][b] * c[b].im + gram.im[a][b] * c[b].re
                yy += c[a].re * gr + c[a].im * gi
                // ⟨x, x⟩ += d_a·G[frames + a][frames + b]·d_b
                xx += d[a] * d[b] * gram.re[frames + a][frames + b]
                // ⟨x, y⟩ += d_a·G[frames + a][b]·c_b
                let hr = gram.re[frames + a][b] * c[b].re - gram.im[frames + a][b] * c[b].im
                let hi = gram.re[frames + a][b] * c[b].im + gram.im[frames + a][b] * c[b].re
                xyRe += d[a] * hr
                xyIm += d[a] * hi
            }
        }
        guard xx > 0, yy > 0 else { return .infinity }
        return 1 - (xyRe * xyRe + xyIm * xyIm) / (xx * yy)
    }

    /// Pattern search on the phases at one k (the first stays: a common shift only turns the
    /// factor between the bands), within `largestPhaseCorrection` of `start`. Returns the mismatch.
    func searchPhases(
        _ overlap: BandOverlap, _ gram: OverlapGram, phases: inout [Double], from start: [Double],
        mismatch current: Double
    ) -> Double {
        let found = PatternSearch.minimise(
            from: phases, cost: current, firstStep: 2 * Double.pi / 180, finest: 0.02 * Double.pi / 180,
            directions: 2 * (phases.count - 1),
            move: { point, direction, step in
                // Each phase after the first, up then down.
                let p = 1 + direction / 2
                var trial = point
                trial[p] += (direction % 2 == 0 ? 1 : -1) * step
                return abs(trial[p] - start[p]) <= Self.largestPhaseCorrection ? trial : nil
            },
            cost: { mismatch(overlap, gram, phases: $0) })
        phases = found.point
        return found.cost
    }

    /// Pattern search on k with the phases held, within `largestWaveVectorCorrection` of `start`:
    /// band +1 is separated once and shifted and transformed per trial. Returns the mismatch.
    func searchWaveVector(
        _ overlap: BandOverlap, frames: ArraySlice<[Float]>, phases: [Double], k: inout (Double, Double),
        from start: (Double, Double), firstStep: Double, mismatch current: Double
    ) -> Double {
        let w = separationWeights(phases)
        let bandPlusOne = separate(frames, phases: phases).c1
        var x = [SpectralSample](repeating: (0, 0), count: overlap.count)
        for p in 0..<phases.count {
            for j in 0..<overlap.count {
                x[j].re += Double(w[0][p]) * overlap.band0Spectra[p][j].re
                x[j].im += Double(w[0][p]) * overlap.band0Spectra[p][j].im
            }
        }
        let xx = x.reduce(0.0) { $0 + $1.re * $1.re + $1.im * $1.im }
        func mismatch(at trial: (Double, Double)) -> Double {
            let y = overlapSpectrum(overlap, of: bandPlusOne, shiftedBy: trial)
            var yy = 0.0
            var xyRe = 0.0
            var xyIm = 0.0
            for j in 0..<overlap.count {
                yy += y[j].re * y[j].re + y[j].im * y[j].im
                xyRe += x[j].re * y[j].re + x[j].im * y[j].im
                xyIm += x[j].re * y[j].im - x[j].im * y[j].re
            }
            guard xx > 0, yy > 0 else { return .infinity }
            return 1 - (xyRe * xyRe + xyIm * xyIm) / (xx * yy)
        }
        let pixelX = 1 / (Double(width) * pixelUm)
        let pixelY = 1 / (Double(height) * pixelUm)
        let compass: [(Double, Double)] = [(1, 0), (-1, 0), (0, 1), (0, -1)]
        let found = PatternSearch.minimise(
            from: k, cost: current, firstStep: firstStep, finest: Self.finestWaveVectorStep,
            directions: compass.count,
            move: { point, direction, step in
                let trial = (
                    point.0 + compass[direction].0 * step * pixelX, point.1 + compass[direction].1 * step * pixelY
                )
                let offset = spectralPixels(trial.0 - start.0, trial.1 - start.1)
                return offset <= Self.largestWaveVectorCorrection ? trial : nil
            },
            cost: { mismatch(at: $0) })
        k = found.point
        return found.cost
    }
}
