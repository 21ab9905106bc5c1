import Foundation
import MoireCore
import MoireFFT

/// Where one band's small-grid spectrum goes in the half spectrum of the 2× grid (−1: nowhere,
/// its Hermitian mirror carries it), and with which Wiener weight.
struct BandPlacement {
    var weight: [Float]
    /// The same placement as runs of consecutive source samples that land on consecutive
    /// destinations (ascending for band +1 and band 0, descending for band −1, the mirror): each
    /// run is one contiguous, vectorisable pass.
    var runs: [Run]

    struct Run {
        var source: Int
        var destination: Int
        var length: Int
    }

    /// From each source sample's destination (`index`, −1: nowhere) and weight.
    init(index: [Int32], weight: [Float], step: Int) {
        self.weight = weight
        var runs: [Run] = []
        var i = 0
        while i < index.count {
            guard index[i] >= 0 else {
                i += 1
                continue
            }
            var length = 1
            while i + length < index.count, index[i + length] >= 0,
                Int(index[i + length]) == Int(index[i]) + step * length
            {
                length += 1
            }
            runs.append(Run(source: i, destination: Int(index[i]), length: length))
            i += length
        }
        self.runs = runs
    }

    /// Adds each source sample times its weight to its destination; `conjugate`: the sample's
    /// complex conjugate (band −1 is band +1 mirrored), stepping down through the destination.
    func accumulate(
        _ source: UnsafePointer<Complex32>, into destination: UnsafeMutablePointer<Complex32>, conjugate: Bool
    ) {
        weight.withUnsafeBufferPointer { weights in
            guard let base = weights.baseAddress else { return }
            nonisolated(unsafe) let w = base
            nonisolated(unsafe) let input = UnsafeRawPointer(source).assumingMemoryBound(to: Float.self)
            nonisolated(unsafe) let output = UnsafeMutableRawPointer(destination).assumingMemoryBound(to: Float.self)
            let runs = runs
            // Runs of one placement never share a destination: they are added in parallel.
            parallelRanges(runs.count, grain: 64) { range in
                for run in runs[range] {
                    let s = input + 2 * run.source
                    let weightRun = w + run.source
                    let vectorLength = run.length / 8 * 8
                    if conjugate {
                        // Descending: destination sample run.destination − t.
                        let d = output + 2 * (run.destination - run.length + 1)
                        let last = run.length - 1
                        for t in stride(from: 0, to: vectorLength, by: 8) {
                            // Samples t…t+7 land on last−t−7 … last−t, in reverse order.
                            let source = UnsafeRawPointer(s + 2 * t).loadUnaligned(as: SIMD16<Float>.self)
                            let weights = reversed(UnsafeRawPointer(weightRun + t).loadUnaligned(as: SIMD8<Float>.self))
                            let target = UnsafeMutableRawPointer(d + 2 * (last - t - 7))
                            var sum = target.loadUnaligned(as: SIMD16<Float>.self)
                            sum.evenHalf += weights * reversed(source.evenHalf)
                            sum.oddHalf -= weights * reversed(source.oddHalf)
                            target.storeBytes(of: sum, as: SIMD16<Float>.self)
                        }
                        for t in vectorLength..<run.length {
                            d[2 * (last - t)] += weightRun[t] * s[2 * t]
                            d[2 * (last - t) + 1] -= weightRun[t] * s[2 * t + 1]
                        }
                    } else {
                        let d = output + 2 * run.destination
                        for t in stride(from: 0, to: vectorLength, by: 8) {
                            let source = UnsafeRawPointer(s + 2 * t).loadUnaligned(as: SIMD16<Float>.self)
                            let weights = UnsafeRawPointer(weightRun + t).loadUnaligned(as: SIMD8<Float>.self)
                            let target = UnsafeMutableRawPointer(d + 2 * t)
                            var sum = target.loadUnaligned(as: SIMD16<Float>.self)
                            sum.evenHalf += weights * source.evenHalf
                            sum.oddHalf += weights * source.oddHalf
                            target.storeBytes(of: sum, as: SIMD16<Float>.self)
                        }
                        for t in vectorLength..<run.length {
                            d[2 * t] += weightRun[t] * s[2 * t]
                            d[2 * t + 1] += weightRun[t] * s[2 * t + 1]
                        }
                    }
                }
            }
        }
    }
}

/// The eight lanes in reverse order.
@inline(__always) func reversed(_ v: SIMD8<Float>) -> SIMD8<Float> {
    SIMD8(v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0])
}

/// Everything precomputed for one set of parameters.
/// A linear phase ramp e^{i(αx + βy)} on a grid, kept as its two factors: one per column and
/// one per row.
final class SeparableRamp: Sendable {
    let alongX: AlignedBuffer<Complex32>
    let alongY: AlignedBuffer<Complex32>

    /// The ramp e^{i(αx + βy + c)} for columns 0..<width and rows 0..<height (the constant c in
    /// the column factors).
    init(width: Int, height: Int, alongX alpha: Double, alongY beta: Double, constant: Double = 0) {
        alongX = AlignedBuffer<Complex32>(count: width)
        alongY = AlignedBuffer<Complex32>(count: height)
        for x in 0..<width {
            let angle = alpha * Double(x) + constant
            alongX[x] = Complex32(Float(cos(angle)), Float(sin(angle)))
        }
        for y in 0..<height {
            let angle = beta * Double(y)
            alongY[y] = Complex32(Float(cos(angle)), Float(sin(angle)))
        }
    }
}

struct WienerPlan {
    /// Band 0 of all orientations together (its OTF does not depend on the orientation), from the r2c half spectrum.
    var band0: BandPlacement
    /// Bands +1 and −1 per orientation, from the full spectrum of band +1 after its sub-pixel shift.
    var plus: [BandPlacement]
    var minus: [BandPlacement]
    /// The sub-pixel part of each orientation's shift, e^{−i2πδ·r}, as its two factors.
    var ramps: [SeparableRamp]
    /// Separation weights per orientation: [unknown][phase] for B0, Re C, Im C.
    var separation: [[[Float]]]
    /// Per sample of the 2× grid's half spectrum: Σ|H|² over every band that lands there, the
    /// apodization (the ideal OTF of the extended support) and the normalised frequency f/f_c.
    var denominator: [Float]
    var apodization: [Float]
    var bigRho: [Float]
    /// Where each sample of band 0's half spectrum goes in the spectral model's fit.
    var band0Sampling: SpectralModel.Sampling
}

/// The filter applied to the 2× grid's half spectrum after the bands are summed (each weighted by
/// its own OTF): apodization / (Σ|H|² + w²(f)), for the regularisation it was built with.
struct WienerFilter {
    let values: AlignedBuffer<Float>
    var builtFor: (params: SIMParameters, options: SIM2DOptions, model: SpectralModel?)?
}

extension SIM2DReconstructor {
    /// Signed frequency index (spectral pixels) of FFT index `u` on a grid of `len`.
    @inline(__always) func signed(_ u: Int, _ len: Int) -> Int { u < len / 2 ? u : u - len }

    /// Least-squares separation weights for phases `phi`: rows B0, Re C, Im C.
    func separationWeights(_ phi: [Double]) -> [[Float]] {
        var m = [[Double]](repeating: [Double](repeating: 0, count: 3), count: 3)
        let rows = phi.map { [1, 2 * cos($0), -2 * sin($0)] }
        for r in rows { for i in 0..<3 { for j in 0..<3 { m[i][j] += r[i] * r[j] } } }
        let mi = invert3(m)
        var w = [[Float]](repeating: [Float](repeating: 0, count: phi.count), count: 3)
        for k in 0..<3 {
            for p in 0..<phi.count {
                var s = 0.0
                for j in 0..<3 { s += mi[k][j] * rows[p][j] }
                w[k][p] = Float(s)
            }
        }
        return w
    }

    /// Precomputes placements, Wiener weights, ramps and separation weights for `params` (cached).
    func prepareWeights(_ params: SIMParameters) throws -> WienerPlan {
        if let w = weightsCache, w.params == params, w.opts == options { return w.plan }
        guard params.angles.count == angles, params.angles.allSatisfy({ $0.phases.count == phases }) else {
            throw MoireError(
                .usage, "parameters are for \(params.angles.count) angles; the reconstructor has \(angles) × \(phases)")
        }
        // Everything on the padded grid (gw × gh) and its 2× grid.
        let gw = grid.width
        let gh = grid.height
        let gn = grid.count
        let W = 2 * gw
        let H = 2 * gh
        let halfW = W / 2 + 1
        let sx = Double(gw) * pixelUm
        let sy = Double(gh) * pixelUm
        let fc = otf.cutoff
        let sigma = options.suppressionFWHM / 2.3548
        /// Half-spectrum index of big-grid frequency (Fu, Fv), or −1 when its mirror holds it.
        func half(_ Fu: Int, _ Fv: Int) -> Int32 {
            let u = ((Fu % W) + W) % W
            let v = ((Fv % H) + H) % H
            return u <= W / 2 ? Int32(v * halfW + u) : -1
        }
        var den = [Float](repeating: 0, count: H * halfW)
        // Band 0 (r2c half spectrum of the small grid: u ≤ width/2).
        let smallHalf = gw / 2 + 1
        var b0i = [Int32](repeating: -1, count: gh * smallHalf)
        var b0h = [Float](repeating: 0, count: gh * smallHalf)
        for v in 0..<gh {
            for u in 0..<(gw / 2) {
                let fv = signed(v, gh)
                let i = v * smallHalf + u
                b0i[i] = half(u, fv)
                b0h[i] = Float(otf.value(hypot(Double(u) / sx, Double(fv) / sy)))
            }
        }
        // Bands ±1 per orientation (full small spectrum).
        // Per sample of band +1: the numerator's weight h·a and the denominator's h²·a, where a ≤ 1
        // is the order-centre attenuation. The attenuation weighs the band as if it were 1/a times
        // noisier there (a per-band Wiener weight): where no other band carries those frequencies
        // they are regularised, never amplified (h·a·D / (h²·a²) would boost them by 1/a).
        var plusH: [[Float]] = []
        var plusDen: [[Float]] = []
        var plusI: [[Int32]] = []
        var minusI: [[Int32]] = []
        var ramps: [SeparableRamp] = []
        let filterModulations = options.modulationInFilter.modulations(params)
        for (a, filterModulation) in zip(params.angles, filterModulations) {
            func att(_ d2: Double) -> Double {
                options.suppression.factor(distance: d2.squareRoot(), leak: a.orderLeak, gaussianSigma: sigma)
            }
            let kxi = Int((a.kx * sx).rounded())
            let kyi = Int((a.ky * sy).rounded())
            let mh = filterModulation / 2
            var ip = [Int32](repeating: -1, count: gn)
            var im = [Int32](repeating: -1, count: gn)
            var hp = [Float](repeating: 0, count: gn)
            var hd = [Float](repeating: 0, count: gn)
            for v in 0..<gh {
                for u in 0..<gw {
                    let i = v * gw + u
                    let Fu = signed(u, gw) - kxi
                    let Fv = signed(v, gh) - kyi
                    let dx = Double(Fu) / sx + a.kx
                    let dy = Double(Fv) / sy + a.ky
                    let h = mh * otf.value(hypot(dx, dy))
                    let attenuation = att(dx * dx + dy * dy)
                    hp[i] = Float(h * attenuation)
                    hd[i] = Float(h * h * attenuation)
                    ip[i] = half(Fu, Fv)
                    im[i] = half(-Fu, -Fv)
                }
            }
            plusH.append(hp); plusDen.append(hd); plusI.append(ip); minusI.append(im)
            let dx = a.kx - Double(kxi) / sx
            let dy = a.ky - Double(kyi) / sy
            // The whole shift e^{−i2πk·(r − r₀)} is referenced to the frame's first pixel r₀ (where the
            // phases are measured), not the padded grid's: the placement does the integer part from the
            // grid's origin, so the ramp carries the sub-pixel part and the constant e^{i2πk·r₀}.
            let constant = 2 * Double.pi * (a.kx * Double(grid.paddingX) + a.ky * Double(grid.paddingY)) * pixelUm
            ramps.append(
                SeparableRamp(
                    width: gw, height: gh, alongX: -2 * Double.pi * dx * pixelUm, alongY: -2 * Double.pi * dy * pixelUm,
                    constant: constant))
        }
        // Denominator over the full plane: each band's |H|² at its own place and at its mirror.
        func addDen(_ idx: Int32, _ weight: Float) { if idx >= 0 { den[Int(idx)] += weight } }
        for v in 0..<gh {
            for u in 0..<gw {
                // Band 0 of every orientation at F and (mirror) −F: only the stored half matters.
                let fu = signed(u, gw)
                let fv = signed(v, gh)
                let h = Float(otf.value(hypot(Double(fu) / sx, Double(fv) / sy)))
                addDen(half(fu, fv), h * h * Float(angles))
            }
        }
        for a in 0..<angles {
            for i in 0..<gn { addDen(plusI[a][i], plusDen[a][i]); addDen(minusI[a][i], plusDen[a][i]) }
        }
        let kmax = params.angles.map(\.kMagnitude).max() ?? 0
        // Apodization toward the extended support, shaped like the ideal incoherent OTF there: with
        // three or more orientations the disc of radius f_c + |k|; with fewer (LLS-SIM: one), the
        // support's own reach in each direction û, f_c + max |k·û| (f_c + |k| along k, f_c across).
        let profile = IdealOTF(na: 1, emissionNm: 2000)  // cutoff 1: the profile at ρ
        let directional = angles < 3
        var apodization = [Float](repeating: 0, count: H * halfW)
        var bigRho = [Float](repeating: 0, count: H * halfW)
        for v in 0..<H {
            for u in 0..<halfW {
                let fx = Double(u) / (Double(W) * pixelUm / 2)
                let fy = Double(signed(v, H)) / (Double(H) * pixelUm / 2)
                let f = hypot(fx, fy)
                var reach = fc + kmax
                if directional {
                    let along = f > 0 ? params.angles.map { abs($0.kx * fx + $0.ky * fy) / f }.max() ?? 0 : 0
                    reach = fc + along
                }
                apodization[v * halfW + u] = Float(profile.value(f / (options.apodization * reach)))
                bigRho[v * halfW + u] = Float(f / fc)
            }
        }
        var band0Rho = [Float](repeating: 0, count: gh * smallHalf)
        for v in 0..<gh {
            for u in 0..<smallHalf {
                band0Rho[v * smallHalf + u] = Float(hypot(Double(u) / sx, Double(signed(v, gh)) / sy) / fc)
            }
        }
        var band0OTF = b0h
        for v in 0..<gh {
            band0OTF[v * smallHalf + gw / 2] = Float(otf.value(hypot(Double(gw / 2) / sx, Double(signed(v, gh)) / sy)))
        }
        let plan = WienerPlan(
            band0: BandPlacement(index: b0i, weight: b0h, step: 1),
            plus: (0..<angles).map { BandPlacement(index: plusI[$0], weight: plusH[$0], step: 1) },
            minus: (0..<angles).map { BandPlacement(index: minusI[$0], weight: plusH[$0], step: -1) },
            ramps: ramps, separation: params.angles.map { separationWeights($0.phases) },
            denominator: den, apodization: apodization, bigRho: bigRho,
            band0Sampling: SpectralModel.Sampling(rho: band0Rho, otf: band0OTF))
        weightsCache = (params, options, plan)
        return plan
    }

    /// The signal and noise of the set whose band-0 half spectrum is in `smallHalf`.
    func measureSpectrum(_ plan: WienerPlan) -> SpectralModel? {
        let count = plan.band0Sampling.destination.count
        for i in 0..<count {
            let s = smallHalf[i]
            bandPower[i] = s.re * s.re + s.im * s.im
        }
        return SpectralModel.fit(
            power: UnsafeBufferPointer(start: bandPower.pointer, count: count),
            sampling: plan.band0Sampling, orientations: angles)
    }

    /// Makes `wienerFilter` match `params`, the options and (adaptive) the set's spectral model;
    /// rebuilt only when one of them changed visibly.
    /// Builds the filter for `params` and the set's measured `model` (quantized: `quantizedForFilter`),
    /// unless the one built last is the same.
    func updateFilter(_ plan: WienerPlan, params: SIMParameters, model measured: SpectralModel?) {
        let model = measured?.quantizedForFilter
        if let built = wienerFilter.builtFor, built.params == params, built.options == options, built.model == model {
            return
        }
        let fixed: Double
        switch options.wiener {
        case .fixed(let w): fixed = w * w
        case .adaptive: fixed = Self.fallbackWiener * Self.fallbackWiener
        }
        let values = wienerFilter.values
        for j in 0..<plan.denominator.count {
            let regularisation = model?.regularisation(atNormalisedFrequency: Double(plan.bigRho[j])) ?? fixed
            values[j] = plan.apodization[j] / (plan.denominator[j] + Float(regularisation))
        }
        wienerFilter.builtFor = (params, options, model)
    }

    /// The constant w used when the adaptive filter has no noise reference (the OTF fills the
    /// camera's whole spectrum) or no signal above the noise.
    static let fallbackWiener = 0.1

    /// Reconstructs one SR frame (`2·width × 2·height`, same intensity scale as the widefield mean).
    ///
    /// Per frame: one real transform of band 0 (all orientations), one complex transform of band +1
    /// per orientation (sub-pixel shift applied in real space, integer shift by placement, band −1
    /// as its Hermitian mirror), and one complex-to-real transform on the 2× grid.
    public func reconstruct(_ frames: [[Float]], parameters params: SIMParameters) throws -> [Float] {
        var out = [Float](repeating: 0, count: 4 * n)
        try out.withUnsafeMutableBufferPointer { try reconstruct(frames, parameters: params, into: $0) }
        return out
    }

    /// Reconstructs into `out` (`2·width × 2·height` floats): no allocation once the weights for
    /// `params` exist. The transforms run on the padded grid (mirrored, faded border); the frame's
    /// part of the result is cut out.
    public func reconstruct(
        _ frames: [[Float]], parameters params: SIMParameters, into out: UnsafeMutableBufferPointer<Float>
    ) throws {
        guard out.count >= 4 * n else {
            throw MoireError(.usage, "output buffer holds \(out.count) floats; \(4 * n) needed")
        }
        // The frames' values are checked in the separation's passes, tile by tile while each tile
        // is in the cache (a pass of its own over the nine frames cost 0.6 ms of ~15).
        try checkShapes(frames)
        let plan = try prepareWeights(params)
        let gw = grid.width
        let gh = grid.height
        let gn = grid.count
        let W = 2 * gw
        let H = 2 * gh
        let halfW = W / 2 + 1
        let halfBig = H * halfW
        bigHalf.pointer.update(repeating: .zero, count: halfBig)
        // Separation is linear per pixel, and so is the padding (a mirrored copy, faded): the bands
        // are separated on the camera's grid, in contiguous passes, and each band is padded once.
        let bandZero = separatedBand0.pointer
        for i in 0..<n { bandZero[i] = 0 }
        var ranges: [(Float, Float, Bool)] = []
        for a in 0..<angles {
            ranges += separate(frames[(a * phases)..<((a + 1) * phases)], weights: plan.separation[a])
            padBandPlusOne(shiftedBy: plan.ramps[a])
            gridForward.execute(gridA.pointer, gridB.pointer)
            plan.plus[a].accumulate(gridB.pointer, into: bigHalf.pointer, conjugate: false)
            plan.minus[a].accumulate(gridB.pointer, into: bigHalf.pointer, conjugate: true)
        }
        try checkValues(ranges)
        padBandZero()
        gridR2C.forward(band0.pointer, smallHalf.pointer)
        plan.band0.accumulate(smallHalf.pointer, into: bigHalf.pointer, conjugate: false)
        var model: SpectralModel?
        if options.wiener == .adaptive {
            model = measureSpectrum(plan)
        }
        lastSpectralModel = model
        updateFilter(plan, params: params, model: model)
        nonisolated(unsafe) let filter = wienerFilter.values.pointer
        nonisolated(unsafe) let spectrum = bigHalf.pointer
        parallelRanges(halfBig) { range in
            for j in range {
                let f = filter[j]
                spectrum[j].re *= f
                spectrum[j].im *= f
            }
        }
        c2rBig.inverse(bigHalf.pointer, bigReal.pointer)
        let scale = 1 / Float(gn)
        let outWidth = 2 * width
        nonisolated(unsafe) let result = bigReal.pointer
        guard let base = out.baseAddress else { return }
        nonisolated(unsafe) let destination = base
        let (top, left) = (2 * grid.paddingY, 2 * grid.paddingX)
        parallelRanges(2 * height, grain: 64) { range in
            for y in range {
                let source = result + (y + top) * W + left
                let row = destination + y * outWidth
                for x in 0..<outWidth { row[x] = source[x] * scale }
            }
        }
    }

    /// One orientation's phases separated on the camera's grid: band 0 added to `separatedBand0`
    /// (every orientation's together), band +1 into `separatedRe`/`separatedIm`, the background
    /// taken out of the sums once (Σₚ wₚ·bg) rather than from every pixel.
    /// Returns each frame's (smallest, largest, all finite), found on the way.
    func separate(_ frames: ArraySlice<[Float]>, weights w: [[Float]]) -> [(Float, Float, Bool)] {
        nonisolated(unsafe) let bandZero = separatedBand0.pointer
        nonisolated(unsafe) let re = separatedRe.pointer
        nonisolated(unsafe) let im = separatedIm.pointer
        let bg = Float(options.background)
        var offsets: (Float, Float, Float) = (0, 0, 0)
        for p in 0..<frames.count {
            offsets.0 += w[0][p] * bg
            offsets.1 += w[1][p] * bg
            offsets.2 += w[2][p] * bg
        }
        // In tiles that stay in the first-level cache while every phase is added to them; the first
        // phase's pass also takes the background's share out.
        let offset = offsets
        let tile = 2048
        let tiles = (n + tile - 1) / tile
        let frameCount = frames.count
        // Per tile and frame: the smallest and largest value, and whether all were finite.
        var tileRanges = [(Float, Float, Bool)](repeating: (.infinity, -.infinity, true), count: tiles * frameCount)
        tileRanges.withUnsafeMutableBufferPointer { found in
            nonisolated(unsafe) let tileRange = found
            parallelRanges(tiles, grain: 8) { range in
                for first in stride(from: range.lowerBound * tile, to: min(n, range.upperBound * tile), by: tile) {
                    let last = min(n, first + tile)
                    for (p, frame) in zip(0..., frames) {
                        let w0 = w[0][p]
                        let wr = w[1][p]
                        let wi = w[2][p]
                        frame.withUnsafeBufferPointer { f in
                            tileRange[(first / tile) * frameCount + p] = Self.separateTile(
                                f, first..<last, weights: (w0, wr, wi), offsets: p == 0 ? offset : nil,
                                into: (bandZero, re, im))
                        }
                    }
                }
            }
        }
        return (0..<frameCount).map { p in
            (0..<tiles).reduce((Float.infinity, -Float.infinity, true)) { found, t in
                let tileRange = tileRanges[t * frameCount + p]
                return (min(found.0, tileRange.0), max(found.1, tileRange.1), found.2 && tileRange.2)
            }
        }
    }

    /// One frame's share of one tile of the separation, in 8-wide passes: band 0 added to
    /// `bands.zero`, band +1 added to (or, with `offsets`, the first phase's, written to)
    /// `bands.re`/`bands.im`, the offsets taken out. Returns the tile's (smallest, largest, all
    /// finite) values of the frame.
    @inline(__always) static func separateTile(
        _ frame: UnsafeBufferPointer<Float>, _ tile: Range<Int>, weights: (Float, Float, Float),
        offsets: (Float, Float, Float)?,
        into bands: (
            zero: UnsafeMutablePointer<Float>, re: UnsafeMutablePointer<Float>, im: UnsafeMutablePointer<Float>
        )
    ) -> (Float, Float, Bool) {
        var found = ValueRange()
        guard let f = frame.baseAddress else { return found.found }
        let (w0, wr, wi) = weights
        let (o0, or, oi) = offsets ?? (0, 0, 0)
        let writes = offsets != nil
        let vectorEnd = tile.lowerBound + tile.count / 8 * 8
        var i = tile.lowerBound
        while i < vectorEnd {
            let v = UnsafeRawPointer(f + i).loadUnaligned(as: SIMD8<Float>.self)
            found.add(v)
            store8(load8(bands.zero + i) + (w0 * v - o0), bands.zero + i)
            if writes {
                store8(wr * v - or, bands.re + i)
                store8(wi * v - oi, bands.im + i)
            } else {
                store8(load8(bands.re + i) + wr * v, bands.re + i)
                store8(load8(bands.im + i) + wi * v, bands.im + i)
            }
            i += 8
        }
        for j in vectorEnd..<tile.upperBound {
            let v = f[j]
            found.add(v)
            bands.zero[j] += w0 * v - o0
            bands.re[j] = writes ? wr * v - or : bands.re[j] + wr * v
            bands.im[j] = writes ? wi * v - oi : bands.im[j] + wi * v
        }
        return found.found
    }

    /// Band +1 on the padded grid (mirrored, faded) in `gridA`, times the sub-pixel shift `ramp`
    /// (its row factor, with the row's weight, folded into one complex factor per row).
    func padBandPlusOne(shiftedBy ramp: SeparableRamp) {
        nonisolated(unsafe) let re = separatedRe.pointer
        nonisolated(unsafe) let im = separatedIm.pointer
        nonisolated(unsafe) let c = gridA.pointer
        nonisolated(unsafe) let alongX = ramp.alongX.pointer
        nonisolated(unsafe) let alongY = ramp.alongY.pointer
        let (gridWidth, left, fieldWidth) = (grid.width, grid.paddingX, width)
        /// Grid sample `i` (column `x`) from band sample `s`, times `factor` (the row's ramp factor
        /// and weight) and the column's ramp factor.
        @Sendable @inline(__always) func place(_ i: Int, _ x: Int, _ s: Int, _ factor: Complex32) {
            let value = Complex32(re[s] * factor.re - im[s] * factor.im, re[s] * factor.im + im[s] * factor.re)
            let e = alongX[x]
            c[i] = Complex32(value.re * e.re - value.im * e.im, value.re * e.im + value.im * e.re)
        }
        @Sendable @inline(__always) func scaled(_ factor: Complex32, _ weight: Float) -> Complex32 {
            Complex32(factor.re * weight, factor.im * weight)
        }
        grid.source.withUnsafeBufferPointer { sources in
            grid.window.withUnsafeBufferPointer { windows in
                nonisolated(unsafe) let (src, win) = (sources, windows)
                parallelRanges(grid.height, grain: 64) { range in
                    for y in range {
                        let row = y * gridWidth
                        let rowFactor = alongY[y]
                        // The mirrored border columns, sample by sample.
                        for x in 0..<left {
                            place(row + x, x, Int(src[row + x]), scaled(rowFactor, win[row + x]))
                        }
                        for x in (left + fieldWidth)..<gridWidth {
                            place(row + x, x, Int(src[row + x]), scaled(rowFactor, win[row + x]))
                        }
                        // The frame's columns: one contiguous source row, one weight.
                        let first = row + left
                        let sourceRow = Int(src[first])
                        let factor = scaled(rowFactor, win[first])
                        let vectorWidth = fieldWidth / 8 * 8
                        let columnFactors = UnsafeRawPointer(alongX + left)
                        let destination = UnsafeMutableRawPointer(c + first)
                        for t in stride(from: 0, to: vectorWidth, by: 8) {
                            let bandRe = UnsafeRawPointer(re + sourceRow + t).loadUnaligned(as: SIMD8<Float>.self)
                            let bandIm = UnsafeRawPointer(im + sourceRow + t).loadUnaligned(as: SIMD8<Float>.self)
                            let rowRe = bandRe * factor.re - bandIm * factor.im
                            let rowIm = bandRe * factor.im + bandIm * factor.re
                            let column = columnFactors.loadUnaligned(
                                fromByteOffset: 8 * t, as: SIMD16<Float>.self)
                            var product = SIMD16<Float>()
                            product.evenHalf = rowRe * column.evenHalf - rowIm * column.oddHalf
                            product.oddHalf = rowRe * column.oddHalf + rowIm * column.evenHalf
                            destination.storeBytes(of: product, toByteOffset: 8 * t, as: SIMD16<Float>.self)
                        }
                        for t in vectorWidth..<fieldWidth { place(first + t, left + t, sourceRow + t, factor) }
                    }
                }
            }
        }
    }

    /// Band 0 of every orientation on the padded grid (mirrored, faded) in `band0`.
    func padBandZero() {
        nonisolated(unsafe) let bandZero = separatedBand0.pointer
        nonisolated(unsafe) let out = band0.pointer
        grid.source.withUnsafeBufferPointer { sources in
            grid.window.withUnsafeBufferPointer { windows in
                nonisolated(unsafe) let (src, win) = (sources, windows)
                parallelRanges(grid.count) { range in
                    for i in range { out[i] = bandZero[Int(src[i])] * win[i] }
                }
            }
        }
    }
}
