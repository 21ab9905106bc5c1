import Foundation
import MoireConfig
import MoireCore

/// The temporal context of a time-lapse: a motion-adaptive running average of the frames seen so far
/// (normalised intensities), which the denoiser gets beside the current frame.
///
/// Each pixel averages up to `maximumFrames` frames. Where a new frame departs from the average by
/// more than noise explains (the 3×3 mean of the difference beyond `motionThreshold` standard
/// deviations, from the camera's noise model), the pixel's history restarts from the new frame, so a
/// moving object leaves no trail. The network gets the average as a second channel; the average
/// stays noisy where it holds few frames and quiet where it holds many, which tells the network how
/// far to trust it. It holds only earlier frames, whose noise is independent of the current frame's,
/// so recorrupted training pairs stay unbiased.
public struct TemporalContext: Sendable {
    public static let maximumFrames: Float = 32
    public static let motionThreshold: Float = 3

    public let width: Int
    public let height: Int
    /// The running average, normalised like the network's input.
    public private(set) var mean: [Float]
    /// Frames each pixel's average holds.
    public private(set) var frames: [Float]

    /// A context holding one frame.
    public init(first frame: [Float], width: Int, height: Int) {
        self.width = width
        self.height = height
        mean = frame
        frames = [Float](repeating: 1, count: frame.count)
    }

    /// The brightness of `frame` relative to the running average, for illumination flicker and
    /// bleaching (the FMD two-photon frames vary by up to 10 % from frame to frame): the median, over
    /// the brighter half of the 8×8 blocks, of the ratio of the block's sums. A median over blocks is
    /// not moved by an object that appears or moves; changes within `brightnessTolerance` count as none
    /// (the running average then stays the plain mean of its frames).
    /// `frame` may be given in ADU with the normalisation (`offset`, `scale`) to apply, so a caller
    /// need not make a normalised copy of the whole frame for it.
    public func brightnessRatio(of frame: [Float], offset: Float = 0, scale: Float = 1) -> Float {
        precondition(frame.count == mean.count)
        let blocksAcross = width / 8
        let blocksDown = height / 8
        // Each block's sums, one row of blocks per task; a block's row of 8 pixels is one 8-wide load.
        var frameSums = [Float](repeating: 0, count: blocksAcross * blocksDown)
        var meanSums = [Float](repeating: 0, count: blocksAcross * blocksDown)
        frame.withUnsafeBufferPointer { frameBuffer in
            mean.withUnsafeBufferPointer { meanBuffer in
                frameSums.withUnsafeMutableBufferPointer { frameSumsBuffer in
                    meanSums.withUnsafeMutableBufferPointer { meanSumsBuffer in
                        nonisolated(unsafe) let (image, average) = (frameBuffer.baseAddress!, meanBuffer.baseAddress!)
                        nonisolated(unsafe) let (imageSums, averageSums) = (
                            frameSumsBuffer.baseAddress!, meanSumsBuffer.baseAddress!
                        )
                        let width = width
                        parallelRanges(blocksDown, grain: max(1, 512 / max(1, blocksAcross))) { blockRows in
                            for blockRow in blockRows {
                                for blockColumn in 0..<blocksAcross {
                                    var imageSum = SIMD8<Float>()
                                    var averageSum = SIMD8<Float>()
                                    for y in (8 * blockRow)..<(8 * blockRow + 8) {
                                        let i = y * width + 8 * blockColumn
                                        imageSum += UnsafeRawPointer(image + i).loadUnaligned(as: SIMD8<Float>.self)
                                        averageSum += UnsafeRawPointer(average + i).loadUnaligned(as: SIMD8<Float>.self)
                                    }
                                    let block = blockRow * blocksAcross + blockColumn
                                    imageSums[block] = (imageSum.sum() - 64 * offset) / scale
                                    averageSums[block] = averageSum.sum()
                                }
                            }
                        }
                    }
                }
            }
        }
        // The brighter half of the blocks (selected, not sorted: this runs on every frame).
        var blocks = zip(frameSums, meanSums).map { (frame: $0, mean: $1) }
        let half = max(1, blocks.count / 2)
        if half < blocks.count { blocks.select(half - 1) { $0.mean > $1.mean } }
        let ratios = blocks.prefix(half).filter { $0.mean > 0 }.map { $0.frame / $0.mean }
        guard ratios.count >= 4, let middle = median(of: ratios) else { return 1 }
        let ratio = min(2, max(0.5, middle))
        return abs(ratio - 1) <= Self.brightnessTolerance ? 1 : ratio
    }

    /// Brightness changes up to this fraction are left alone.
    public static let brightnessTolerance: Float = 0.01

    /// The running average at the brightness of `frame` (what the network sees beside it).
    public func mean(matching frame: [Float]) -> [Float] {
        let ratio = brightnessRatio(of: frame)
        return ratio == 1 ? mean : mean.map { $0 * ratio }
    }

    /// Adds `frame` (normalised), whose per-pixel noise variance is `variance` (normalised units);
    /// `correlationFactor` is the variance of a 3×3 mean of the noise relative to independent pixels'
    /// (`NoiseCorrelation.boxMean3VarianceFactor`; 1 for pixel-independent noise). A caller that has
    /// just computed `brightnessRatio(of: frame)` passes it on.
    public mutating func add(
        _ frame: [Float], variance: [Float], correlationFactor: Float = 1, brightnessRatio known: Float? = nil
    ) {
        precondition(frame.count == mean.count && variance.count == mean.count)
        // The history follows the illumination: brought to this frame's brightness before it is compared and added.
        let ratio = known ?? brightnessRatio(of: frame)
        let (width, height) = (self.width, self.height)
        let rowsPerTask = max(1, 8192 / width)
        let threshold2 = Self.motionThreshold * Self.motionThreshold
        let maximumFrames = Self.maximumFrames
        // The frame's difference from the history and its sums along rows of three (edges clamped),
        // then the 3×3 mean of the difference against the noise it should have: each pass on all cores.
        var difference = [Float](repeating: 0, count: mean.count)
        var rowSums = [Float](repeating: 0, count: mean.count)
        mean.withUnsafeMutableBufferPointer { meanBuffer in
            frames.withUnsafeMutableBufferPointer { framesBuffer in
                difference.withUnsafeMutableBufferPointer { differenceBuffer in
                    rowSums.withUnsafeMutableBufferPointer { rowSumsBuffer in
                        frame.withUnsafeBufferPointer { frameBuffer in
                            variance.withUnsafeBufferPointer { varianceBuffer in
                                nonisolated(unsafe) let (average, count) = (
                                    meanBuffer.baseAddress!, framesBuffer.baseAddress!
                                )
                                nonisolated(unsafe) let (change, sums) = (
                                    differenceBuffer.baseAddress!, rowSumsBuffer.baseAddress!
                                )
                                nonisolated(unsafe) let (image, noise) = (
                                    frameBuffer.baseAddress!, varianceBuffer.baseAddress!
                                )
                                parallelRanges(height, grain: rowsPerTask) { rows in
                                    for y in rows {
                                        let line = y * width
                                        if ratio != 1 {
                                            for i in line..<(line + width) { average[i] *= ratio }
                                        }
                                        for i in line..<(line + width) { change[i] = image[i] - average[i] }
                                        for x in 0..<width {
                                            let left = change[line + max(x - 1, 0)]
                                            let right = change[line + min(x + 1, width - 1)]
                                            sums[line + x] = left + change[line + x] + right
                                        }
                                    }
                                }
                                parallelRanges(height, grain: rowsPerTask) { rows in
                                    for y in rows {
                                        let above = max(y - 1, 0) * width
                                        let line = y * width
                                        let below = min(y + 1, height - 1) * width
                                        for x in 0..<width {
                                            let i = line + x
                                            let local = (sums[above + x] + sums[i] + sums[below + x]) / 9
                                            // Variance of a 3×3 mean of differences between a frame and an average of n frames.
                                            let expected = noise[i] * (1 + 1 / count[i]) / 9 * correlationFactor
                                            if local * local > threshold2 * expected {
                                                average[i] = image[i]
                                                count[i] = 1
                                            } else {
                                                count[i] = min(count[i] + 1, maximumFrames)
                                                average[i] += change[i] / count[i]
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The 3×3 mean with edges clamped (separable: the sums along rows of three, then down columns of three).
    static func boxMean3(_ image: [Float], width: Int, height: Int) -> [Float] {
        var rows = [Float](repeating: 0, count: image.count)
        image.withUnsafeBufferPointer { source in
            rows.withUnsafeMutableBufferPointer { rowSums in
                for y in 0..<height {
                    let line = y * width
                    for x in 0..<width {
                        let left = source[line + max(x - 1, 0)]
                        let right = source[line + min(x + 1, width - 1)]
                        rowSums[line + x] = left + source[line + x] + right
                    }
                }
            }
        }
        return [Float](unsafeUninitializedCapacity: image.count) { out, initialised in
            rows.withUnsafeBufferPointer { rowSums in
                for y in 0..<height {
                    let above = max(y - 1, 0) * width
                    let line = y * width
                    let below = min(y + 1, height - 1) * width
                    for x in 0..<width {
                        out[line + x] = (rowSums[above + x] + rowSums[line + x] + rowSums[below + x]) / 9
                    }
                }
            }
            initialised = image.count
        }
    }
}
