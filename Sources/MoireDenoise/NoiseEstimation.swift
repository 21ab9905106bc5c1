import Foundation
import MoireConfig
import MoireCore

/// Estimates a camera's Poisson–Gaussian noise model, and its spatial correlation, from the images
/// themselves (`--noise auto`).
///
/// Photon transfer: the image is cut into blocks; each gives its mean μ and the variance and
/// autocovariances of its noise; blocks are grouped by μ (groups of equal count), the median
/// variance per group resists blocks with structure or motion, and a straight line
/// σ² = β1·(μ − b) + β2 is fitted through the groups.
///
/// - **Frame differences** (two or more frames of a time-lapse or stack): the noise of a block is
///   read from the difference of two consecutive frames (the second brought to the first's overall
///   brightness, divided by √(1 + r²)), where a still scene cancels; μ is the pair's mean. This measures the variance and the correlation of the noise
///   alone, whatever the specimen's texture. Pairs that are identical (a duplicated frame) are skipped.
/// - **One frame**: the noise is what remains of a block after a plane is fitted; the variance comes
///   from the differences of adjacent pixels (which structure smoother than a pixel barely enters),
///   corrected for the correlation of adjacent pixels; the correlation from the flattest blocks of
///   the group (of blocks of similar brightness) whose neighbours correlate least. Texture at the
///   scale of a pixel reads as correlation here, so a single frame's correlation counts only when it
///   is strong (`singleFrameThreshold`).
///
/// Clipped pixels (the lowest or highest value, when many pixels hold it: 8-bit data clipped at 0,
/// saturated spots) carry no noise information; blocks holding any are left out. 8-bit quantisation
/// adds 1/12 ADU², which the fitted read variance absorbs. When the fitted line reaches zero variance
/// above the darkest block, the offset b is put where it does (the read variance then being the
/// quantisation's).
public enum NoiseEstimation {
    /// How the model was measured.
    public enum Method: String, Sendable {
        case frameDifferences = "frame differences"
        case singleFrame = "single frame"
    }

    /// A model and how it was found.
    public struct Estimate: Sendable {
        public var model: NoiseModel
        public var method: Method
        /// Pairs of frames used (0 for a single frame).
        public var framePairs: Int
        /// Blocks that entered the fit.
        public var blocks: Int
        /// The share of pixels left out as clipped.
        public var clippedFraction: Double
    }

    /// A single frame's correlation counts only at or above this (texture inflates it).
    public static let singleFrameThreshold = 0.3
    /// A group's correlation in a single frame counts when this many of its flat blocks have noise.
    static let fewestBlocksForCorrelation = 3
    /// A value held by more than this share of the pixels at the image's minimum or maximum is clipping.
    static let clippedShare = 0.001
    /// Consecutive frame pairs used at most.
    static let maximumPairs = 8

    /// The model of a single frame.
    public static func estimate(_ frame: [Float], width: Int, height: Int) throws -> NoiseModel {
        try estimate(frames: [frame], width: width, height: height).model
    }

    /// The model of a sequence of frames of one scene (a time-lapse or a stack): from the differences of
    /// consecutive frames when at least one pair differs, else from the first frame alone.
    public static func estimate(frames: [[Float]], width: Int, height: Int) throws -> Estimate {
        guard let first = frames.first, width >= 32, height >= 32,
            frames.allSatisfy({ $0.count == width * height })
        else {
            throw MoireError(.usage, "noise estimation needs frames of at least 32×32")
        }
        // Blocks of 16² keep the bias of removing each block's mean (or plane) from the correlations
        // small (σ²·Σρ/256); blocks of 8² find the darkest part of the frame for the offset.
        let side = min(width, height) >= 128 ? 16 : 8
        var blocks: [BlockStatistics] = []
        var pairs = 0
        var clippedPixels = 0
        var darkest = Double.infinity
        for t in 0..<min(frames.count - 1, maximumPairs) {
            let a = frames[t]
            let b = frames[t + 1]
            guard a != b, a.allSatisfy(\.isFinite), b.allSatisfy(\.isFinite) else { continue }
            let clipped = zip(clippedMask(a), clippedMask(b)).map { $0 || $1 }
            clippedPixels += clipped.filter { $0 }.count
            let mean = zip(a, b).map { ($0 + $1) / 2 }
            // Illumination flicker or bleaching scales the whole frame: b is brought to a's brightness
            // (above a provisional offset) before the difference, and the difference divided by
            // √(1 + r²) so it keeps one frame's noise variance.
            let darkestOfA = darkestMean(a, clipped: clipped, width: width, height: height)
            let provisionalOffset = darkestOfA.isFinite ? Float(darkestOfA) : (a.min() ?? 0)
            let sumA = a.reduce(0) { $0 + Double($1 - provisionalOffset) }
            let sumB = b.reduce(0) { $0 + Double($1 - provisionalOffset) }
            let ratio = sumA > 0 && sumB > 0 ? Float(min(2, max(0.5, sumA / sumB))) : 1
            let norm = (1 + ratio * ratio).squareRoot()
            let difference = zip(a, b).map { (($0 - provisionalOffset) - ratio * ($1 - provisionalOffset)) / norm }
            blocks += blockStatistics(
                signal: mean, noise: difference, clipped: clipped, width: width, height: height, side: side,
                detrend: .mean)
            darkest = min(darkest, darkestMean(mean, clipped: clipped, width: width, height: height))
            pairs += 1
        }
        if pairs > 0 {
            let fit = try fitDifferences(blocks, darkest: darkest)
            return Estimate(
                model: fit, method: .frameDifferences, framePairs: pairs, blocks: blocks.count,
                clippedFraction: Double(clippedPixels) / Double(pairs * width * height))
        }
        guard first.allSatisfy(\.isFinite) else { throw MoireError(.numeric, "frame contains NaN or infinite values") }
        let clipped = clippedMask(first)
        blocks = blockStatistics(
            signal: first, noise: first, clipped: clipped, width: width, height: height, side: side, detrend: .plane)
        let fit = try fitSingleFrame(
            blocks, darkest: darkestMean(first, clipped: clipped, width: width, height: height))
        return Estimate(
            model: fit, method: .singleFrame, framePairs: 0, blocks: blocks.count,
            clippedFraction: Double(clipped.filter { $0 }.count) / Double(width * height))
    }

    // MARK: - Blocks

    struct BlockStatistics {
        var mean: Double
        /// The noise variance (after detrending).
        var variance: Double
        /// Autocovariances at `NoiseCorrelation.halfPlaneLags`.
        var covariances: [Double]
        /// Half the mean square of adjacent-pixel differences (horizontal and vertical), of the noise image.
        var adjacentDifference: Double
    }

    enum Detrend {
        case mean
        case plane
    }

    /// Pixels at the image's minimum or maximum when many pixels hold that value.
    static func clippedMask(_ image: [Float]) -> [Bool] {
        guard let low = image.min(), let high = image.max(), high > low else {
            return [Bool](repeating: true, count: image.count)
        }
        let limit = Int(clippedShare * Double(image.count))
        let atLow = image.filter { $0 == low }.count > limit
        let atHigh = image.filter { $0 == high }.count > limit
        return image.map { (atLow && $0 == low) || (atHigh && $0 == high) }
    }

    /// The lowest mean of the unclipped 8×8 blocks (where the signal is closest to the offset).
    static func darkestMean(_ image: [Float], clipped: [Bool], width: Int, height: Int) -> Double {
        var darkest = Double.infinity
        for by in stride(from: 0, through: height - 8, by: 8) {
            for bx in stride(from: 0, through: width - 8, by: 8) {
                var sum = 0.0
                var hasClipped = false
                for y in by..<(by + 8) {
                    for x in bx..<(bx + 8) {
                        sum += Double(image[y * width + x])
                        hasClipped = hasClipped || clipped[y * width + x]
                    }
                }
                if !hasClipped { darkest = min(darkest, sum / 64) }
            }
        }
        return darkest
    }

    static func blockStatistics(
        signal: [Float], noise: [Float], clipped: [Bool], width: Int, height: Int, side: Int, detrend: Detrend
    ) -> [BlockStatistics] {
        let lags = NoiseCorrelation.halfPlaneLags
        let count = Double(side * side)
        var out: [BlockStatistics] = []
        var residual = [Double](repeating: 0, count: side * side)
        for by in stride(from: 0, through: height - side, by: side) {
            for bx in stride(from: 0, through: width - side, by: side) {
                var hasClipped = false
                var signalSum = 0.0
                for y in by..<(by + side) {
                    for x in bx..<(bx + side) {
                        hasClipped = hasClipped || clipped[y * width + x]
                        signalSum += Double(signal[y * width + x])
                    }
                }
                guard !hasClipped else { continue }
                for y in 0..<side {
                    for x in 0..<side {
                        residual[y * side + x] = Double(noise[(by + y) * width + bx + x])
                    }
                }
                let parameters = removeTrend(&residual, side: side, detrend: detrend)
                let variance = residual.map { $0 * $0 }.reduce(0, +) / (count - Double(parameters))
                var covariances: [Double] = []
                for lag in lags {
                    var sum = 0.0
                    var pairs = 0
                    for y in 0..<(side - lag.dy) {
                        for x in max(0, -lag.dx)..<min(side, side - lag.dx) {
                            sum += residual[y * side + x] * residual[(y + lag.dy) * side + x + lag.dx]
                            pairs += 1
                        }
                    }
                    covariances.append(sum / Double(pairs))
                }
                var difference = 0.0
                for y in 0..<side {
                    for x in 0..<(side - 1) {
                        let horizontal = residual[y * side + x + 1] - residual[y * side + x]
                        let vertical = residual[(x + 1) * side + y] - residual[x * side + y]
                        difference += horizontal * horizontal + vertical * vertical
                    }
                }
                out.append(
                    BlockStatistics(
                        mean: signalSum / count, variance: variance, covariances: covariances,
                        adjacentDifference: difference / Double(4 * side * (side - 1))))
            }
        }
        return out
    }

    /// Removes the block's mean, or its least-squares plane; returns the number of parameters removed.
    static func removeTrend(_ r: inout [Double], side: Int, detrend: Detrend) -> Int {
        let n = Double(side * side)
        let mean = r.reduce(0, +) / n
        let centre = Double(side - 1) / 2
        var slopeX = 0.0
        var slopeY = 0.0
        if detrend == .plane {
            // x and y are orthogonal on a square grid centred at 0: each slope is its own projection.
            var sxx = 0.0
            for y in 0..<side {
                for x in 0..<side {
                    let value = r[y * side + x] - mean
                    slopeX += value * (Double(x) - centre)
                    slopeY += value * (Double(y) - centre)
                    sxx += (Double(x) - centre) * (Double(x) - centre)
                }
            }
            slopeX /= sxx
            slopeY /= sxx
        }
        for y in 0..<side {
            for x in 0..<side {
                r[y * side + x] -= mean + slopeX * (Double(x) - centre) + slopeY * (Double(y) - centre)
            }
        }
        return detrend == .plane ? 3 : 1
    }

    // MARK: - Fits

    /// Blocks sorted by mean and cut into groups of equal count (at most 10, at least 6 blocks each).
    static func groups(_ blocks: [BlockStatistics]) throws -> [[BlockStatistics]] {
        guard blocks.count >= 12 else {
            throw MoireError(.numeric, "too few unclipped blocks (\(blocks.count)) to estimate the noise")
        }
        let sorted = blocks.sorted { $0.mean < $1.mean }
        let count = min(10, sorted.count / 6)
        return (0..<count).map { k in Array(sorted[(k * sorted.count / count)..<((k + 1) * sorted.count / count)]) }
    }

    /// The median of a group's values (never empty: groups hold at least six blocks).
    static func median(_ values: [Double]) -> Double { MoireCore.median(of: values) ?? 0 }

    static func fitDifferences(_ blocks: [BlockStatistics], darkest: Double) throws -> NoiseModel {
        let groups = try groups(blocks)
        var points: [(mean: Double, variance: Double)] = []
        var covarianceSums = [Double](repeating: 0, count: NoiseCorrelation.halfPlaneLags.count)
        var varianceSum = 0.0
        for group in groups {
            let typical = median(group.map(\.variance))
            points.append((group.map(\.mean).reduce(0, +) / Double(group.count), typical))
            // Blocks far above their group's variance hold motion or a change of the scene.
            for block in group where block.variance <= 2 * typical {
                varianceSum += block.variance
                for k in covarianceSums.indices { covarianceSums[k] += block.covariances[k] }
            }
        }
        let correlation = NoiseCorrelation(halfPlane: covarianceSums.map { $0 / max(varianceSum, 1e-30) })
        return try line(
            points, darkest: darkest, correlation: correlation.isSignificant ? correlation : nil)
    }

    static func fitSingleFrame(_ blocks: [BlockStatistics], darkest: Double) throws -> NoiseModel {
        let groups = try groups(blocks)
        // The flattest blocks of each group: texture raises adjacent differences, noise alone does not.
        let flatGroups = groups.map { group in
            Array(group.sorted { $0.adjacentDifference < $1.adjacentDifference }.prefix(max(3, group.count * 2 / 5)))
        }
        // Each flat block's own correlations, their median within each group (a few textured blocks,
        // which would dominate a pooled sum by their variance, do not move it), and of the groups the
        // one whose neighbours correlate least: the noise's correlation is the same at every
        // brightness, while texture at the scale of a pixel raises it where the specimen is (FMD
        // Confocal BPAE R: 0.05 between neighbours in the darkest group, 0.48 in the brightest; the
        // widefield fields, whose noise correlates, 0.54–0.69 in every group).
        let groupCorrelations: [NoiseCorrelation] = flatGroups.compactMap { group in
            let blocks = group.filter { $0.variance > 0 }
            guard blocks.count >= Self.fewestBlocksForCorrelation else { return nil }
            return NoiseCorrelation(
                halfPlane: NoiseCorrelation.halfPlaneLags.indices.map { k in
                    median(blocks.map { $0.covariances[k] / $0.variance })
                })
        }
        func neighbours(_ c: NoiseCorrelation) -> Double { c.rho(1, 0) + c.rho(0, 1) }
        let correlation =
            groupCorrelations.min { neighbours($0) < neighbours($1) }
            ?? NoiseCorrelation(halfPlane: [Double](repeating: 0, count: NoiseCorrelation.halfPlaneLags.count))
        let strong = NoiseCorrelation.halfPlaneLags.contains {
            abs(correlation.rho($0.dx, $0.dy)) >= singleFrameThreshold
        }
        // Adjacent differences measure σ²·(1 − ρ₁); ρ₁ is the mean of the horizontal and vertical neighbours'.
        let adjacent = strong ? min(0.9, max(0, (correlation.rho(1, 0) + correlation.rho(0, 1)) / 2)) : 0
        let points = flatGroups.map { group in
            (
                mean: group.map(\.mean).reduce(0, +) / Double(group.count),
                variance: median(group.map(\.adjacentDifference)) / (1 - adjacent)
            )
        }.sorted { $0.mean < $1.mean }
        return try line(points, darkest: darkest, correlation: strong ? correlation : nil)
    }

    /// The least-squares line σ² = β1·μ + c through the groups, as σ² = β1·(μ − b) + β2.
    static func line(
        _ points: [(mean: Double, variance: Double)], darkest: Double, correlation: NoiseCorrelation?
    ) throws -> NoiseModel {
        guard points.count >= 2, let low = points.first?.mean, let high = points.last?.mean, high > low else {
            throw MoireError(.numeric, "the frame has too little range in intensity to estimate its noise")
        }
        let xs = points.map(\.mean)
        let ys = points.map(\.variance)
        let mx = xs.reduce(0, +) / Double(xs.count)
        let my = ys.reduce(0, +) / Double(ys.count)
        let sxx = xs.map { ($0 - mx) * ($0 - mx) }.reduce(0, +)
        let sxy = zip(xs, ys).map { ($0 - mx) * ($1 - my) }.reduce(0, +)
        let gain = max(1e-4, sxy / sxx)
        let intercept = my - gain * mx
        let quantisation = 1.0 / 12
        let readAtDarkest = intercept + gain * darkest
        if readAtDarkest >= quantisation {
            return NoiseModel(offset: darkest, gain: gain, readVariance: readAtDarkest, correlation: correlation)
        }
        // The line reaches the quantisation's variance above the darkest block: that is where the signal starts.
        let offset = (quantisation - intercept) / gain
        return NoiseModel(offset: offset, gain: gain, readVariance: quantisation, correlation: correlation)
    }
}
