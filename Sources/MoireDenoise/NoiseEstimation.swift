import Foundation
import MoireCore

/// Estimates a frame's Poisson–Gaussian noise model when the camera's is not known (`--noise auto`).
///
/// Method (photon-transfer from the image itself): the frame is split into 8×8 blocks; in each,
/// the local mean μ and the variance σ² of the difference of horizontally adjacent pixels (halved;
/// it removes structure smoother than a pixel) are taken; the offset b is the darkest block's mean;
/// blocks are binned by μ, the median σ² per bin resists blocks with structure, and a straight line
/// σ² = β1·(μ − b) + β2 is fitted by least squares.
public enum NoiseEstimation {
    public static func estimate(_ frame: [Float], width: Int, height: Int) throws -> NoiseModel {
        guard frame.count == width * height, width >= 32, height >= 32 else {
            throw MoireError(.usage, "noise estimation needs a frame of at least 32×32")
        }
        var points: [(Double, Double)] = []
        for by in stride(from: 0, to: height - 8, by: 8) {
            for bx in stride(from: 0, to: width - 8, by: 8) {
                var sum = 0.0
                var d2 = 0.0
                var cnt = 0.0
                for y in by..<(by + 8) {
                    for x in bx..<(bx + 7) {
                        let a = Double(frame[y * width + x])
                        let b = Double(frame[y * width + x + 1])
                        sum += a; d2 += (a - b) * (a - b); cnt += 1
                    }
                }
                points.append((sum / cnt, d2 / cnt / 2))
            }
        }
        guard points.count >= 8 else { throw MoireError(.numeric, "frame too small for noise estimation") }
        let offset = points.map(\.0).min()!
        let lo = points.map(\.0).min()!
        let hi = points.map(\.0).max()!
        let bins = 12
        var binned: [(Double, Double)] = []
        for k in 0..<bins {
            let a = lo + (hi - lo) * Double(k) / Double(bins)
            let b = lo + (hi - lo) * Double(k + 1) / Double(bins)
            let inBin = points.filter { $0.0 >= a && ($0.0 < b || k == bins - 1) }
            guard inBin.count >= 3 else { continue }
            let v = inBin.map(\.1).sorted()
            binned.append((inBin.map(\.0).reduce(0, +) / Double(inBin.count), v[v.count / 2]))
        }
        guard binned.count >= 2 else {
            throw MoireError(.numeric, "the frame has too little range in intensity to estimate its noise")
        }
        let xs = binned.map { $0.0 - offset }
        let ys = binned.map(\.1)
        let mx = xs.reduce(0, +) / Double(xs.count)
        let my = ys.reduce(0, +) / Double(ys.count)
        let sxx = xs.map { ($0 - mx) * ($0 - mx) }.reduce(0, +)
        let sxy = zip(xs, ys).map { ($0 - mx) * ($1 - my) }.reduce(0, +)
        let gain = sxx > 0 ? max(1e-4, sxy / sxx) : 1
        let read = max(1e-4, my - gain * mx)
        return NoiseModel(offset: offset, gain: gain, readVariance: read)
    }
}
