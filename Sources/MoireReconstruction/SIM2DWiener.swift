import Foundation
import MoireCore
import MoireFFT

/// Where one band's small-grid spectrum goes in the 2× spectrum, and with which Wiener weight.
struct BandPlacement {
    var index: [Int32]
    var weight: [Float]
}

extension SIM2DReconstructor {
    /// Signed frequency index (spectral pixels) of FFT index `u` on a grid of `len`.
    @inline(__always) func signed(_ u: Int, _ len: Int) -> Int { u < len / 2 ? u : u - len }

    /// Precomputes the placements and Wiener weights for `params` (done again only when they change).
    func prepareWeights(_ params: SIMParameters) throws -> [BandPlacement] {
        if let w = weightsCache, w.params == params, w.opts == options { return w.num }
        guard params.angles.count == angles, params.angles.allSatisfy({ $0.phases.count == phases }) else {
            throw MoireError(.usage, "parameters are for \(params.angles.count) angles; the reconstructor has \(angles) × \(phases)")
        }
        let W = 2 * width, H = 2 * height
        let sx = Double(width) * pixelUm, sy = Double(height) * pixelUm
        let fc = otf.cutoff
        let sigma = options.suppressionFWHM / 2.3548
        func att(_ d2: Double) -> Double { options.suppression > 0 ? 1 - options.suppression * exp(-d2 / (2 * sigma * sigma)) : 1 }
        // H_o(F) on the big grid for every band, and where each small-grid sample lands.
        var den = [Float](repeating: 0, count: W * H)
        var bands: [(index: [Int32], h: [Float])] = []
        for a in params.angles {
            let kxi = Int((a.kx * sx).rounded()), kyi = Int((a.ky * sy).rounded())
            let mh = a.modulation / 2
            var i0 = [Int32](repeating: 0, count: n), h0 = [Float](repeating: 0, count: n)
            var ip = [Int32](repeating: 0, count: n), hp = [Float](repeating: 0, count: n)
            var im = [Int32](repeating: 0, count: n), hm = [Float](repeating: 0, count: n)
            for v in 0..<height { for u in 0..<width {
                let i = v * width + u
                let fu = signed(u, width), fv = signed(v, height)
                // Band 0 at F = f.
                let f0x = Double(fu) / sx, f0y = Double(fv) / sy
                i0[i] = Int32(((fv + H) % H) * W + (fu + W) % W)
                h0[i] = Float(otf.value(hypot(f0x, f0y)))
                // Band +1 at F = f − k_int: content S̃(F)·O(F + k).
                let Fu = fu - kxi, Fv = fv - kyi
                let Fx = Double(Fu) / sx, Fy = Double(Fv) / sy
                ip[i] = Int32(((Fv % H + H) % H) * W + ((Fu % W) + W) % W)
                let dxp = Fx + a.kx, dyp = Fy + a.ky
                hp[i] = Float(mh * otf.value(hypot(dxp, dyp)) * att(dxp * dxp + dyp * dyp))
                // Band −1 (Hermitian mirror) at −F: content S̃(F′)·O(F′ − k).
                im[i] = Int32((((-Fv) % H + H) % H) * W + (((-Fu) % W) + W) % W)
                hm[i] = hp[i]
            } }
            bands.append((i0, h0)); bands.append((ip, hp)); bands.append((im, hm))
        }
        for b in bands { for i in 0..<n { den[Int(b.index[i])] += b.h[i] * b.h[i] } }
        let kmax = params.angles.map(\.kMagnitude).max() ?? 0
        let apoEdge = options.apodization * (fc + kmax)
        let w2 = Float(options.wiener * options.wiener)
        var placements: [BandPlacement] = []
        for b in bands {
            var wt = [Float](repeating: 0, count: n)
            for i in 0..<n {
                let j = Int(b.index[i])
                let (fx, fy) = freq(j % W, j / W, w: W, h: H, scale: pixelUm / 2)
                let apo = max(0, 1 - hypot(fx, fy) / apoEdge)
                wt[i] = b.h[i] * Float(apo) / (den[j] + w2)
            }
            placements.append(BandPlacement(index: b.index, weight: wt))
        }
        weightsCache = (params, options, placements)
        return placements
    }

    /// Reconstructs one SR frame (`2·width × 2·height`, same intensity scale as the widefield mean).
    public func reconstruct(_ frames: [[Float]], parameters params: SIMParameters) throws -> [Float] {
        try check(frames)
        let placements = try prepareWeights(params)
        let W = 2 * width, H = 2 * height
        for i in 0..<(W * H) { big[i] = .zero }
        let spec = AlignedBuffer<Complex32>(count: n)
        for (a, ap) in params.angles.enumerated() {
            let (b0, c1) = separate(frames[(a * phases)..<((a + 1) * phases)], phases: ap.phases)
            // Band 0.
            for i in 0..<n { bufA[i] = Complex32(b0[i], 0) }
            fwd.execute(bufA.pointer, spec.pointer)
            let p0 = placements[3 * a]
            for i in 0..<n { let j = Int(p0.index[i]); big[j].re += p0.weight[i] * spec[i].re; big[j].im += p0.weight[i] * spec[i].im }
            // Band ±1: sub-pixel part of the shift in real space, integer part by placement.
            let sx = Double(width) * pixelUm, sy = Double(height) * pixelUm
            let dx = ap.kx - (ap.kx * sx).rounded() / sx, dy = ap.ky - (ap.ky * sy).rounded() / sy
            for y in 0..<height { for x in 0..<width {
                let ang = -2 * Double.pi * (dx * Double(x) + dy * Double(y)) * pixelUm
                let c = Float(cos(ang)), s = Float(sin(ang)), v = c1[y * width + x]
                bufA[y * width + x] = Complex32(v.re * c - v.im * s, v.re * s + v.im * c)
            } }
            fwd.execute(bufA.pointer, spec.pointer)
            let pp = placements[3 * a + 1], pm = placements[3 * a + 2]
            for i in 0..<n {
                let s = spec[i]
                let j = Int(pp.index[i]); big[j].re += pp.weight[i] * s.re; big[j].im += pp.weight[i] * s.im
                let k = Int(pm.index[i]); big[k].re += pm.weight[i] * s.re; big[k].im -= pm.weight[i] * s.im
            }
        }
        bigInv.execute(big.pointer, bigOut.pointer)
        let scale = 1 / Float(n)
        return (0..<(W * H)).map { bigOut[$0].re * scale }
    }
}
