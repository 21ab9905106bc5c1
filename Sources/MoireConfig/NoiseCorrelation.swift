import Foundation

/// The spatial correlation of a camera's noise, and a kernel that synthesises noise with it.
///
/// Many real cameras do not give pixel-independent noise: demosaicing, on-chip binning, resampling
/// and scanning electronics spread each pixel's noise over its neighbours (the widefield frames of
/// the FMD data set have a correlation of about 0.6 between adjacent pixels). Recorrupted training
/// pairs stay unbiased only when the added noise has the same covariance as the frame's own, so the
/// noise is modelled as `n = K ⊛ (σ·w)`: white noise w scaled by the per-pixel standard deviation σ
/// of the Poisson–Gaussian model, then filtered by a small symmetric kernel K with Σ K² = 1 (the
/// variance stays σ²). K is the zero-phase square root of the measured correlation's power
/// spectrum (FM2S keeps the correlation of the noise it synthesises for the same reason).
public struct NoiseCorrelation: Codable, Sendable, Equatable {
    /// The largest lag measured, in pixels (along x and y).
    public static let lagRadius = 2
    /// The kernel's radius: one pixel beyond the lags measured, where the square root of the spectrum still reaches.
    public static let kernelRadius = 3
    /// Below this correlation at every lag the noise counts as pixel-independent.
    public static let independenceThreshold = 0.1

    /// ρ(dx, dy) for dx, dy in −lagRadius…lagRadius, row-major by dy then dx; ρ(0, 0) = 1, ρ(−d) = ρ(d).
    public let correlation: [Double]
    /// K on a (2·kernelRadius + 1)² grid, row-major, Σ K² = 1.
    public let kernel: [Float]

    /// The correlation at lag (dx, dy); 0 beyond the lags measured.
    public func rho(_ dx: Int, _ dy: Int) -> Double {
        let r = Self.lagRadius
        guard abs(dx) <= r, abs(dy) <= r else { return 0 }
        return correlation[(dy + r) * (2 * r + 1) + dx + r]
    }

    /// Builds the model from the correlations at the half-plane lags (`halfPlaneLags`); the others follow by symmetry.
    public init(halfPlane: [Double]) {
        let r = Self.lagRadius
        let side = 2 * r + 1
        var grid = [Double](repeating: 0, count: side * side)
        grid[r * side + r] = 1
        for (k, lag) in Self.halfPlaneLags.enumerated() {
            grid[(lag.dy + r) * side + lag.dx + r] = halfPlane[k]
            grid[(-lag.dy + r) * side - lag.dx + r] = halfPlane[k]
        }
        correlation = grid
        kernel = Self.squareRootKernel(of: grid)
    }

    /// From a camera profile's lags (one of each ± pair; lags it does not state are 0).
    public init(lags: [NoiseLag]) {
        self.init(
            halfPlane: Self.halfPlaneLags.map { lag in
                lags.first { $0.dx == lag.dx && $0.dy == lag.dy }?.rho ?? 0
            })
    }

    /// The lines of a camera profile's `calibration` that state this correlation (lags of at
    /// least 0.005, what two decimals show).
    public var profileLines: String {
        let stated = Self.halfPlaneLags.filter { abs(rho($0.dx, $0.dy)) >= 0.005 }
        guard !stated.isEmpty else { return "noise_correlation: {}" }
        let entries = stated.map { String(format: "\"%d,%d\": %.2f", $0.dx, $0.dy, rho($0.dx, $0.dy)) }
        return "noise_correlation: {" + entries.joined(separator: ", ") + "}"
    }

    /// The lags (dx, dy) with dy > 0, or dy = 0 and dx > 0, up to `lagRadius`: one of each ± pair.
    public static let halfPlaneLags: [(dx: Int, dy: Int)] = {
        var lags: [(dx: Int, dy: Int)] = []
        for dy in 0...lagRadius {
            for dx in -lagRadius...lagRadius where dy > 0 || dx > 0 {
                lags.append((dx, dy))
            }
        }
        return lags
    }()

    /// Whether any lag's correlation reaches `independenceThreshold`.
    public var isSignificant: Bool {
        Self.halfPlaneLags.contains { abs(rho($0.dx, $0.dy)) >= Self.independenceThreshold }
    }

    /// The variance of a 3×3 mean of such noise relative to σ²/9, the value for independent pixels:
    /// (1/9) Σ over pairs of pixels p, q of the 3×3 window of ρ(p − q).
    public var boxMean3VarianceFactor: Double {
        var sum = 0.0
        for py in 0..<3 {
            for px in 0..<3 {
                for qy in 0..<3 {
                    for qx in 0..<3 {
                        sum += rho(px - qx, py - qy)
                    }
                }
            }
        }
        return sum / 9
    }

    /// K = the inverse transform of √S, S being the correlation's power spectrum on a 32² grid
    /// (clamped at a small positive floor where the measured correlations make it negative),
    /// truncated to the kernel's support and scaled so Σ K² = 1.
    static func squareRootKernel(of grid: [Double]) -> [Float] {
        let n = 32
        let r = lagRadius
        let side = 2 * r + 1
        var amplitude = [Double](repeating: 0, count: n * n)
        var peak = 0.0
        for fy in 0..<n {
            for fx in 0..<n {
                var s = 0.0
                for dy in -r...r {
                    for dx in -r...r {
                        let phase = 2 * Double.pi * Double(fx * dx + fy * dy) / Double(n)
                        s += grid[(dy + r) * side + dx + r] * cos(phase)
                    }
                }
                amplitude[fy * n + fx] = s
                peak = max(peak, s)
            }
        }
        let floor = 1e-3 * peak
        amplitude = amplitude.map { max($0, floor).squareRoot() }
        let kr = kernelRadius
        let kside = 2 * kr + 1
        var kernel = [Double](repeating: 0, count: kside * kside)
        for v in -kr...kr {
            for u in -kr...kr {
                var k = 0.0
                for fy in 0..<n {
                    for fx in 0..<n {
                        let phase = 2 * Double.pi * Double(fx * u + fy * v) / Double(n)
                        k += amplitude[fy * n + fx] * cos(phase)
                    }
                }
                kernel[(v + kr) * kside + u + kr] = k / Double(n * n)
            }
        }
        let norm = kernel.map { $0 * $0 }.reduce(0, +).squareRoot()
        return kernel.map { Float($0 / norm) }
    }

    /// `field` (width × height) filtered by K, edges mirrored.
    public func filter(_ field: [Float], width: Int, height: Int) -> [Float] {
        let kr = Self.kernelRadius
        let kside = 2 * kr + 1
        var out = [Float](repeating: 0, count: field.count)
        func mirrored(_ i: Int, _ n: Int) -> Int {
            guard n > 1 else { return 0 }
            var j = i
            while j < 0 || j >= n { j = j < 0 ? -j : 2 * (n - 1) - j }
            return j
        }
        for y in 0..<height {
            for x in 0..<width {
                var sum: Float = 0
                for v in -kr...kr {
                    let row = mirrored(y + v, height) * width
                    for u in -kr...kr {
                        sum += kernel[(v + kr) * kside + u + kr] * field[row + mirrored(x + u, width)]
                    }
                }
                out[y * width + x] = sum
            }
        }
        return out
    }
}
