import Foundation
import MoireCore

/// Self-supervised training and inference of the U-Net on frames in ADU.
///
/// Frames are normalised as `(ADU − offset) / scale` (scale: a high percentile of the first frame
/// seen); training draws random crops, recorrupts them with the noise model and minimises the
/// mean squared error between f(ŷ) and ỹ with Adam. `weightsVersion` counts the updates.
///
/// With temporal context (`UNet.Input.frameAndHistory`) the network also sees a motion-adaptive
/// running average of the earlier frames (`TemporalContext`): `denoise` (or `observe`) adds each
/// frame to it after use, and training pairs the recorrupted crop with the same crop of the context.
// Not Sendable: one thread at a time (the stage's worker); weights shared under DenoiseStage.weightsLock.
public final class Denoiser {
    public let net: UNet
    public var model: NoiseModel
    /// The starting learning rate; with `decay`, step n uses `learningRate · decay.factor^(min(n, steps)/steps)`.
    public var learningRate: Float = 1e-3 { didSet { optimizer.learningRate = currentRate } }
    public var decay: (factor: Float, steps: Int)? { didSet { optimizer.learningRate = currentRate } }
    /// Weight averaging for inference: with a decay d in (0, 1), `denoise` uses the bias-corrected
    /// exponential moving average of the weights over the adaptation steps (Polyak averaging), which
    /// removes the step-to-step jitter of the last update; 0 uses the current weights.
    public var averaging: Float = 0
    /// With a deconvolution term (ZS-DeconvNet), the network's output is the deconvolved image and
    /// training fits its PSF-blurred version to the target, with Hessian regularisation.
    public var deconvolution: DeconvolutionLoss?
    public var crop = 32
    public var batch = 4
    /// Recorruption strength α: the input gets α·σ of extra noise, the target σ/α less (see `Recorruption`).
    public var alpha = 1.0
    public private(set) var weightsVersion = 0
    /// The normalisation scale (ADU), taken from the first frame seen unless set.
    public var scale: Float?
    public private(set) var lastLoss: Double = .nan
    let optimizer: Adam
    var rng: SeededRandom
    /// The exponential moving average of each parameter (for `averaging`).
    private var average: [Tensor] = []
    private var averagedSteps = 0
    /// The last frame's input tensor (reused while the frame size stays).
    private var lastInput: Tensor?
    /// Temporal context: the running average of the earlier frames (a caller that interleaves several
    /// sequences keeps one context per sequence and sets it before each frame).
    public var context: TemporalContext? { didSet { trainingBrightness = nil } }
    /// The context's brightness ratio for the frame the last adaptation step trained on: the steps of
    /// one frame (several per frame, live and offline) compute it once.
    private var trainingBrightness: (frame: [Float], offset: Float, scale: Float, ratio: Float)?

    public var usesTemporalContext: Bool { net.input == .frameAndHistory }

    var currentRate: Float {
        guard let decay, decay.steps > 0 else { return learningRate }
        return learningRate * pow(decay.factor, Float(min(weightsVersion, decay.steps)) / Float(decay.steps))
    }

    public init(engine: DNNLEngine, model: NoiseModel, input: UNet.Input = .frame, seed: UInt64 = 1) {
        net = UNet(engine: engine, input: input, seed: seed)
        self.model = model
        optimizer = Adam(parameters: net.parameters, learningRate: 1e-3)
        rng = SeededRandom(seed: seed &+ 99)
    }

    func normaliser(_ frame: [Float]) -> Float {
        if let scale { return scale }
        var values = frame
        let percentile = Int(Double(values.count - 1) * 0.999)
        values.select(percentile)
        let s = max(1, values[percentile] - Float(model.offset))
        scale = s
        return s
    }

    /// One Adam step on `batch` random crops of `frame` (`width × height`, ADU) with recorrupted pairs. Returns the loss.
    @discardableResult
    public func adapt(_ frame: [Float], width: Int, height: Int) throws -> Double {
        try validate(frame, width: width, height: height)
        let model = self.model
        let alpha = self.alpha
        let crop = self.crop
        return try step(frame, width: width, height: height) { patch, rng in
            Recorruption.pair(patch, width: crop, model: model, alpha: alpha, rng: &rng)
        }
    }

    /// One supervised Adam step: `frame` (ADU) against `clean`, the noise-free image of the same scene
    /// in ADU (simulated data: what the shipped models learn from). Temporal context is allowed: the
    /// target shares no noise with the earlier frames.
    @discardableResult
    public func adapt(_ frame: [Float], clean: [Float], width: Int, height: Int) throws -> Double {
        try validate(frame, width: width, height: height)
        try validate(clean, width: width, height: height)
        return try step(frame, target: clean, width: width, height: height)
    }

    /// One Adam step with pairs that need no noise model: `input`/`target` are two images of the same
    /// scene with independent noise (odd and even frames of a time-lapse, neighbouring planes, or a
    /// Neighbor2Neighbor sub-sampled pair).
    @discardableResult
    public func adapt(input: [Float], target: [Float], width: Int, height: Int) throws -> Double {
        guard !usesTemporalContext else {
            // The context (earlier frames) would share its noise with a target taken from a neighbouring frame.
            throw MoireError(.usage, "temporal context trains on recorrupted pairs only, not on image pairs")
        }
        try validate(input, width: width, height: height)
        try validate(target, width: width, height: height)
        return try step(input, target: target, width: width, height: height)
    }

    func validate(_ frame: [Float], width: Int, height: Int) throws {
        guard frame.count == width * height, width >= crop, height >= crop else {
            throw MoireError(.usage, "frame \(width)×\(height) is smaller than the \(crop)-pixel crops")
        }
        guard allFinite(frame) else { throw MoireError(.numeric, "frame contains NaN or infinite values") }
    }

    /// Crops `batch` patches at the same places of `input` and `target` (or, without a target, makes
    /// each input patch into a pair with `makePair`) and takes one Adam step. One random stream
    /// draws the crop positions and the pairs.
    func step(
        _ input: [Float], target targetImage: [Float]? = nil, width: Int, height: Int,
        makePair: (([Float], inout SeededRandom) -> ([Float], [Float]))? = nil
    ) throws -> Double {
        let s = normaliser(input)
        let off = Float(model.offset)
        let channels = net.input.rawValue
        let x = Tensor(n: batch, c: channels, h: crop, w: crop)
        let target = Tensor(n: batch, c: 1, h: crop, w: crop)
        let history = context.flatMap { $0.width == width && $0.height == height ? $0 : nil }
        // The history at this frame's brightness (as inference sees it); only the crops are scaled.
        let brightness = history.map { trainingBrightnessRatio(of: input, history: $0, offset: off, scale: s) } ?? 1
        for b in 0..<batch {
            let x0 = Int(rng.next() % UInt64(width - crop + 1))
            let y0 = Int(rng.next() % UInt64(height - crop + 1))
            func cut(_ img: [Float]) -> [Float] {
                var patch = [Float](repeating: 0, count: crop * crop)
                for y in 0..<crop { for xx in 0..<crop { patch[y * crop + xx] = img[(y0 + y) * width + x0 + xx] } }
                return patch
            }
            let (a, t) = targetImage.map { (cut(input), cut($0)) } ?? makePair!(cut(input), &rng)
            let meanPatch = history.map { cut($0.mean).map { $0 * brightness } }
            for i in 0..<(crop * crop) {
                let frameValue = (a[i] - off) / s
                let base = (b * crop * crop + i) * channels
                x[base] = frameValue
                if channels == 2 {
                    // Without an earlier frame the frame itself stands in for the average (inference too).
                    x[base + 1] = meanPatch?[i] ?? frameValue
                }
                target[b * crop * crop + i] = (t[i] - off) / s
            }
        }
        net.zeroGradients()
        let cache = UNet.Cache()
        let y = try net.forward(x, cache: cache)
        let g = Tensor(n: batch, c: 1, h: crop, w: crop)
        var loss = 0.0
        if let deconvolution {
            loss = deconvolution.evaluate(
                y.data, target: target.data, batch: batch, width: crop, height: crop, grad: g.data)
        } else {
            let k = 2 / Float(y.count)
            for i in 0..<y.count {
                let d = y[i] - target[i]
                loss += Double(d * d)
                g[i] = k * d
            }
            loss /= Double(y.count)
        }
        guard loss.isFinite else { throw MoireError(.numeric, "training loss is not finite") }
        try net.backward(cache, gradOutput: g)
        optimizer.learningRate = currentRate
        optimizer.update()
        weightsVersion += 1
        if averaging > 0 {
            let params = net.parameters
            if average.count != params.count {
                average = params.map { $0.0.like() }
                averagedSteps = 0
            }
            averagedSteps += 1
            let decay = averaging
            for (k, (p, _)) in params.enumerated() {
                let mean = average[k].data
                let value = p.data
                for i in 0..<p.count { mean[i] = decay * mean[i] + (1 - decay) * value[i] }
            }
        }
        lastLoss = loss
        return loss
    }

    /// `history.brightnessRatio(of:offset:scale:)`, kept while the frame, its normalisation and the
    /// context stay the same (a frame's array compares equal to itself at once, by its storage).
    private func trainingBrightnessRatio(
        of frame: [Float], history: TemporalContext, offset: Float, scale: Float
    ) -> Float {
        if let known = trainingBrightness, known.offset == offset, known.scale == scale, known.frame == frame {
            return known.ratio
        }
        let ratio = history.brightnessRatio(of: frame, offset: offset, scale: scale)
        trainingBrightness = (frame, offset, scale, ratio)
        return ratio
    }

    /// The denoised frame in ADU (sides must be multiples of 4). `scale` overrides the normalisation
    /// (to reproduce a published frame exactly, give the scale its header records).
    public func denoise(_ frame: [Float], width: Int, height: Int, scale given: Float? = nil) throws -> [Float] {
        let x = inputTensor(width: width, height: height)
        let s = try fillNetworkInput(frame, width: width, height: height, scale: given, into: x.data)
        if selfEnsemble {
            let mean = try withInferenceWeights { try ensembleForward(x) }
            return mean.withUnsafeBufferPointer { output(of: $0, scale: s) }
        }
        let y = try withInferenceWeights { try net.forward(x) }
        return output(of: UnsafeBufferPointer(start: y.data, count: y.count), scale: s)
    }

    /// Inference averages the network's outputs over the eight rotations and mirror images of the
    /// frame (a geometric self-ensemble: eight passes instead of one).
    public var selfEnsemble = false

    /// The mean of the network's outputs for the eight rotations and reflections of `x`, each
    /// mapped back.
    private func ensembleForward(_ x: Tensor) throws -> [Float] {
        let (h, w, c) = (x.h, x.w, x.c)
        var sum = [Float](repeating: 0, count: h * w)
        for k in 0..<8 {
            let turned = k % 2 == 1
            let t = Tensor(n: 1, c: c, h: turned ? w : h, w: turned ? h : w)
            // Where each pixel goes: used to turn the frame and, read back, to turn the output back.
            let destination = (0..<(h * w)).map { Self.dihedral(k, $0 / w, $0 % w, h, w) }
            for (pixel, to) in destination.enumerated() {
                for ch in 0..<c { t.data[to * c + ch] = x.data[pixel * c + ch] }
            }
            let out = try net.forward(t)
            for (pixel, from) in destination.enumerated() { sum[pixel] += out.data[from] }
        }
        return sum.map { $0 / 8 }
    }

    /// Where pixel (y, x) of an h × w image lands under dihedral transform k (mirrored when k ≥ 4,
    /// then turned a quarter k mod 4 times), as an index into the transformed image.
    static func dihedral(_ k: Int, _ y: Int, _ x: Int, _ h: Int, _ w: Int) -> Int {
        var (row, column, height, width) = (y, k >= 4 ? w - 1 - x : x, h, w)
        for _ in 0..<(k % 4) { (row, column, height, width) = (width - 1 - column, row, width, height) }
        return row * width + column
    }

    /// The first half of `denoise`, for a network run elsewhere (`moire worker`): the network's
    /// input for `frame` (its channels interleaved per pixel), and the scale it was normalised by;
    /// the temporal context takes the frame as `denoise` would. `output(of:scale:)` is the second half.
    public func networkInput(_ frame: [Float], width: Int, height: Int, scale given: Float? = nil) throws -> (
        input: [Float], scale: Float
    ) {
        var input = [Float](repeating: 0, count: frame.count * net.input.rawValue)
        let s = try input.withUnsafeMutableBufferPointer {
            try fillNetworkInput(frame, width: width, height: height, scale: given, into: $0.baseAddress!)
        }
        return (input, s)
    }

    /// The network's output for an input made by `networkInput` (what a worker runs).
    public func networkOutput(input: [Float], width: Int, height: Int) throws -> [Float] {
        let x = inputTensor(width: width, height: height)
        guard input.count == x.count else {
            throw MoireError(.usage, "a network input of \(input.count) values; expected \(x.count)")
        }
        input.withUnsafeBufferPointer { x.data.update(from: $0.baseAddress!, count: x.count) }
        let y = try withInferenceWeights { try net.forward(x) }
        return Array(UnsafeBufferPointer(start: y.data, count: y.count))
    }

    /// Fills `input` with the network's input for `frame` and adds the frame to the temporal
    /// context (after reading it); the scale used.
    private func fillNetworkInput(
        _ frame: [Float], width: Int, height: Int, scale given: Float?, into input: UnsafeMutablePointer<Float>
    ) throws -> Float {
        guard frame.count == width * height else {
            throw MoireError(.usage, "frame has \(frame.count) pixels; expected \(width)×\(height)")
        }
        let s = given ?? normaliser(frame)
        let off = Float(model.offset)
        guard usesTemporalContext else {
            for i in 0..<frame.count { input[i] = (frame[i] - off) / s }
            return s
        }
        let normalised = Self.normalised(frame, offset: off, scale: s)
        let history = context.flatMap { $0.width == width && $0.height == height ? $0 : nil }
        let brightness = history?.brightnessRatio(of: normalised) ?? 1
        // Without an earlier frame the frame itself stands in for the average.
        let average = history?.mean ?? normalised
        average.withUnsafeBufferPointer { averageBuffer in
            normalised.withUnsafeBufferPointer { normalisedBuffer in
                nonisolated(unsafe) let (earlier, current, channels) = (
                    averageBuffer.baseAddress!, normalisedBuffer.baseAddress!, input
                )
                parallelRanges(normalised.count, grain: 32_768) { range in
                    for i in range {
                        channels[2 * i] = current[i]
                        channels[2 * i + 1] = earlier[i] * brightness
                    }
                }
            }
        }
        add(toContext: normalised, width: width, height: height, scale: s, brightnessRatio: brightness)
        return s
    }

    /// `(frame − offset) / scale`, on all cores.
    static func normalised(_ frame: [Float], offset: Float, scale: Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: frame.count) { buffer, initialised in
            frame.withUnsafeBufferPointer { frameBuffer in
                nonisolated(unsafe) let (values, result) = (frameBuffer.baseAddress!, buffer.baseAddress!)
                parallelRanges(frame.count, grain: 32_768) { range in
                    for i in range { result[i] = (values[i] - offset) / scale }
                }
            }
            initialised = frame.count
        }
    }

    /// The network's output `y` back in ADU (`scale`: what the input was normalised by).
    public func output(of y: [Float], scale s: Float) -> [Float] {
        y.withUnsafeBufferPointer { output(of: $0, scale: s) }
    }

    private func output(of y: UnsafeBufferPointer<Float>, scale s: Float) -> [Float] {
        let off = Float(model.offset)
        return [Float](unsafeUninitializedCapacity: y.count) { buffer, initialised in
            for i in 0..<y.count { buffer[i] = y[i] * s + off }
            initialised = y.count
        }
    }

    /// The network's input tensor for frames of `width × height`, kept from frame to frame.
    private func inputTensor(width: Int, height: Int) -> Tensor {
        if let kept = lastInput, kept.w == width, kept.h == height { return kept }
        let made = Tensor(n: 1, c: net.input.rawValue, h: height, w: width)
        lastInput = made
        return made
    }

    /// Adds `frame` (ADU) to the temporal context without denoising it (training walks through a
    /// time-lapse this way).
    public func observe(_ frame: [Float], width: Int, height: Int) {
        guard usesTemporalContext, frame.count == width * height else { return }
        let s = normaliser(frame)
        let off = Float(model.offset)
        add(toContext: frame.map { ($0 - off) / s }, width: width, height: height, scale: s)
    }

    private func add(
        toContext normalised: [Float], width: Int, height: Int, scale s: Float, brightnessRatio: Float? = nil
    ) {
        guard var current = context, current.width == width, current.height == height else {
            context = TemporalContext(first: normalised, width: width, height: height)
            return
        }
        // The camera's variance, in normalised units: (gain·signal + read variance) / scale².
        let gain = Float(model.gain)
        let read = Float(model.readVariance)
        let variance = [Float](unsafeUninitializedCapacity: normalised.count) { buffer, initialised in
            normalised.withUnsafeBufferPointer { normalisedBuffer in
                nonisolated(unsafe) let (values, variances) = (normalisedBuffer.baseAddress!, buffer.baseAddress!)
                parallelRanges(normalised.count, grain: 32_768) { range in
                    for i in range { variances[i] = (gain * max(values[i], 0) * s + read) / (s * s) }
                }
            }
            initialised = normalised.count
        }
        let correlationFactor = Float(model.correlation?.boxMean3VarianceFactor ?? 1)
        context = nil  // add in place: no copy of the arrays
        current.add(
            normalised, variance: variance, correlationFactor: correlationFactor, brightnessRatio: brightnessRatio)
        context = current
    }

    /// Forgets the temporal context (a new time-lapse, plane or channel starts).
    public func resetContext() { context = nil }

    /// Runs `body` with the weights inference uses: the averaged ones when averaging is on.
    public func withInferenceWeights<T>(_ body: () throws -> T) rethrows -> T {
        guard averaging > 0, averagedSteps > 0 else { return try body() }
        let params = net.parameters
        let correction = 1 / (1 - pow(averaging, Float(averagedSteps)))
        let current = params.map { $0.0.values }
        for (k, (p, _)) in params.enumerated() {
            let mean = average[k].data
            let value = p.data
            for i in 0..<p.count { value[i] = mean[i] * correction }
        }
        defer {
            for (k, (p, _)) in params.enumerated() {
                current[k].withUnsafeBufferPointer { p.data.update(from: $0.baseAddress!, count: p.count) }
            }
        }
        return try body()
    }
}

/// Peak signal-to-noise ratio (dB) of `x` against `truth`, with the peak of the truth.
public func psnr(_ x: [Float], _ truth: [Float]) -> Double {
    let peak = Double(truth.max() ?? 1) - Double(truth.min() ?? 0)
    let mse = zip(x, truth).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(x.count)
    return 10 * log10(peak * peak / max(mse, 1e-30))
}
