import Foundation
import MoireCore

/// Self-supervised training and inference of the U-Net on frames in ADU.
///
/// Frames are normalised as `(ADU − offset) / scale` (scale: a high percentile of the first frame
/// seen); training draws random crops, recorrupts them with the noise model and minimises the
/// mean squared error between f(ŷ) and ỹ with Adam. `weightsVersion` counts the updates.
public final class Denoiser: @unchecked Sendable {
    public let net: UNet
    public var model: NoiseModel
    public var learningRate: Float = 1e-3 { didSet { optimizer.learningRate = learningRate } }
    public var crop = 32
    public var batch = 4
    public private(set) var weightsVersion = 0
    public private(set) var scale: Float?
    public private(set) var lastLoss: Double = .nan
    let optimizer: Adam
    var rng: SeededRandom

    public init(engine: DNNLEngine, model: NoiseModel, seed: UInt64 = 1) {
        net = UNet(engine: engine, seed: seed)
        self.model = model
        optimizer = Adam(parameters: net.parameters, learningRate: 1e-3)
        rng = SeededRandom(seed: seed &+ 99)
    }

    func normaliser(_ frame: [Float]) -> Float {
        if let scale { return scale }
        let sorted = frame.sorted()
        let s = max(1, sorted[Int(Double(sorted.count - 1) * 0.999)] - Float(model.offset))
        scale = s
        return s
    }

    /// One Adam step on `batch` random crops of `frame` (`width × height`, ADU) with recorrupted pairs. Returns the loss.
    @discardableResult
    public func adapt(_ frame: [Float], width: Int, height: Int) throws -> Double {
        try validate(frame, width: width, height: height)
        let model = self.model
        return try step(frame, width: width, height: height) { patch, rng in Recorruption.pair(patch, model: model, rng: &rng) }
    }

    /// One Adam step with pairs that need no noise model: `input`/`target` are two images of the same
    /// scene with independent noise (odd and even frames of a time-lapse, neighbouring planes, or a
    /// Neighbor2Neighbor sub-sampled pair).
    @discardableResult
    public func adapt(input: [Float], target: [Float], width: Int, height: Int) throws -> Double {
        try validate(input, width: width, height: height)
        try validate(target, width: width, height: height)
        return try step(input, target: target, width: width, height: height)
    }

    func validate(_ frame: [Float], width: Int, height: Int) throws {
        guard frame.count == width * height, width >= crop, height >= crop else {
            throw MoireError(.usage, "frame \(width)×\(height) is smaller than the \(crop)-pixel crops")
        }
        guard frame.allSatisfy(\.isFinite) else { throw MoireError(.numeric, "frame contains NaN or infinite values") }
    }

    /// Crops `batch` patches at the same places of `input` and `target` (or, without a target, makes
    /// each input patch into a pair with `makePair`) and takes one Adam step. One random stream
    /// draws the crop positions and the pairs.
    func step(_ input: [Float], target targetImage: [Float]? = nil, width: Int, height: Int,
              makePair: (([Float], inout SeededRandom) -> ([Float], [Float]))? = nil) throws -> Double {
        let s = normaliser(input), off = Float(model.offset)
        let x = Tensor(n: batch, c: 1, h: crop, w: crop), target = Tensor(n: batch, c: 1, h: crop, w: crop)
        for b in 0..<batch {
            let x0 = Int(rng.next() % UInt64(width - crop + 1)), y0 = Int(rng.next() % UInt64(height - crop + 1))
            func cut(_ img: [Float]) -> [Float] {
                var patch = [Float](repeating: 0, count: crop * crop)
                for y in 0..<crop { for xx in 0..<crop { patch[y * crop + xx] = img[(y0 + y) * width + x0 + xx] } }
                return patch
            }
            let (a, t) = targetImage.map { (cut(input), cut($0)) } ?? makePair!(cut(input), &rng)
            for i in 0..<(crop * crop) {
                x[b * crop * crop + i] = (a[i] - off) / s
                target[b * crop * crop + i] = (t[i] - off) / s
            }
        }
        net.zeroGradients()
        let cache = UNet.Cache()
        let y = try net.forward(x, cache: cache)
        let g = Tensor(n: batch, c: 1, h: crop, w: crop)
        var loss = 0.0
        let k = 2 / Float(y.count)
        for i in 0..<y.count { let d = y[i] - target[i]; loss += Double(d * d); g[i] = k * d }
        loss /= Double(y.count)
        guard loss.isFinite else { throw MoireError(.numeric, "training loss is not finite") }
        try net.backward(cache, gradOutput: g)
        optimizer.update()
        weightsVersion += 1
        lastLoss = loss
        return loss
    }

    /// The denoised frame in ADU (sides must be multiples of 4). `scale` overrides the normalisation
    /// (to reproduce a published frame exactly, give the scale its header records).
    public func denoise(_ frame: [Float], width: Int, height: Int, scale given: Float? = nil) throws -> [Float] {
        guard frame.count == width * height else { throw MoireError(.usage, "frame has \(frame.count) pixels; expected \(width)×\(height)") }
        let s = given ?? normaliser(frame), off = Float(model.offset)
        let x = Tensor(n: 1, c: 1, h: height, w: width, values: frame.map { ($0 - off) / s })
        let y = try net.forward(x)
        return y.values.map { $0 * s + off }
    }
}

/// Peak signal-to-noise ratio (dB) of `x` against `truth`, with the peak of the truth.
public func psnr(_ x: [Float], _ truth: [Float]) -> Double {
    let peak = Double(truth.max() ?? 1) - Double(truth.min() ?? 0)
    let mse = zip(x, truth).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(x.count)
    return 10 * log10(peak * peak / max(mse, 1e-30))
}
