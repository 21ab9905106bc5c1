import Foundation
import MoireHardware
import MoireSimulation

/// A widefield time-lapse of moving puncta with their true positions: Gaussian spots (the PSF of the
/// given σ, integrated over each pixel), each moving in its own direction at 1–3 pixels per frame and
/// bouncing off the field's edges, Poisson shot noise, Gaussian read noise, gain and offset.
public struct MovingPuncta: Sendable {
    public var frames: [[Float]]
    /// Noise-free frames in ADU.
    public var truth: [[Float]]
    /// positions[t][k]: punctum k's centre at frame t, in pixels (pixel i covers [i − 0.5, i + 0.5]).
    public var positions: [[(x: Double, y: Double)]]
    public var width: Int
    public var offset: Double
    public var gain: Double
    public var readNoiseE: Double

    public init(
        size: Int, frames count: Int, puncta: Int, photonsPerPunctum: Double, psfSigmaPx: Double = 1.4,
        speedRange: ClosedRange<Double> = 1...3, backgroundE: Double = 1, gain: Double = 1,
        readNoiseE: Double = 1.5, offset: Double = 100, seed: UInt64
    ) {
        var rng = SimRandom(seed: seed)
        let margin = 6.0
        let span = Double(size) - 1 - 2 * margin
        var x = (0..<puncta).map { _ in margin + rng.uniform() * span }
        var y = (0..<puncta).map { _ in margin + rng.uniform() * span }
        var vx = [Double]()
        var vy = [Double]()
        for _ in 0..<puncta {
            let speed = speedRange.lowerBound + rng.uniform() * (speedRange.upperBound - speedRange.lowerBound)
            let direction = rng.uniform() * 2 * .pi
            vx.append(speed * cos(direction))
            vy.append(speed * sin(direction))
        }
        func bounce(_ p: inout Double, _ v: inout Double) {
            if p < margin {
                p = 2 * margin - p
                v = -v
            }
            if p > margin + span {
                p = 2 * (margin + span) - p
                v = -v
            }
        }
        // The fraction of a unit Gaussian spot centred at c that falls on pixel i.
        func share(_ i: Int, _ c: Double) -> Double {
            let s = psfSigmaPx * 2.0.squareRoot()
            return 0.5 * (erf((Double(i) + 0.5 - c) / s) - erf((Double(i) - 0.5 - c) / s))
        }
        var frames: [[Float]] = []
        var truths: [[Float]] = []
        var positions: [[(x: Double, y: Double)]] = []
        let reach = Int(ceil(4 * psfSigmaPx))
        for _ in 0..<count {
            var electrons = [Double](repeating: backgroundE, count: size * size)
            for k in 0..<puncta {
                let cx = Int(x[k].rounded())
                let cy = Int(y[k].rounded())
                for py in max(0, cy - reach)...min(size - 1, cy + reach) {
                    let wy = share(py, y[k])
                    for px in max(0, cx - reach)...min(size - 1, cx + reach) {
                        electrons[py * size + px] += photonsPerPunctum * wy * share(px, x[k])
                    }
                }
            }
            positions.append(zip(x, y).map { (x: $0, y: $1) })
            truths.append(electrons.map { Float(offset + gain * $0) })
            frames.append(
                electrons.map { e in
                    let counted = rng.poisson(e) + readNoiseE * rng.normal()
                    return Float(min(65535, max(0, (offset + gain * counted).rounded())))
                })
            for k in 0..<puncta {
                x[k] += vx[k]
                y[k] += vy[k]
                bounce(&x[k], &vx[k])
                bounce(&y[k], &vy[k])
            }
        }
        self.frames = frames
        self.truth = truths
        self.positions = positions
        self.width = size
        self.offset = offset
        self.gain = gain
        self.readNoiseE = readNoiseE
    }

    /// The centroid of `frame` (ADU) within `radius` pixels of (x, y), above the window's median.
    public func centroid(_ frame: [Float], near p: (x: Double, y: Double), radius: Int = 3) -> (x: Double, y: Double)? {
        let cx = Int(p.x.rounded())
        let cy = Int(p.y.rounded())
        var values: [(dx: Int, dy: Int, v: Double)] = []
        for dy in -radius...radius {
            for dx in -radius...radius where dx * dx + dy * dy <= radius * radius {
                let px = cx + dx
                let py = cy + dy
                guard px >= 0, px < width, py >= 0, py < width else { return nil }
                values.append((dx, dy, Double(frame[py * width + px])))
            }
        }
        let median = values.map(\.v).sorted()[values.count / 2]
        var total = 0.0
        var sumX = 0.0
        var sumY = 0.0
        for value in values {
            let w = max(0, value.v - median)
            total += w
            sumX += w * Double(value.dx)
            sumY += w * Double(value.dy)
        }
        guard total > 0 else { return nil }
        return (Double(cx) + sumX / total, Double(cy) + sumY / total)
    }

    /// Indices of the puncta at frame t with no other punctum within `distance` pixels.
    public func isolated(at t: Int, distance: Double = 8) -> [Int] {
        let p = positions[t]
        return p.indices.filter { k in
            p.indices.allSatisfy { j in j == k || hypot(p[j].x - p[k].x, p[j].y - p[k].y) > distance }
        }
    }
}
