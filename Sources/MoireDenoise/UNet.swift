import Foundation
import MoireCore

/// The denoiser: a 2-level U-Net (16/32/64 channels) with a residual output, small enough to run
/// online on 2 cores.
///
/// enc1: conv C→16, conv 16→16 · enc2: conv/2 16→32, conv 32→32 · bottom: conv/2 32→64, conv 64→64 ·
/// two decoder steps (`Design`) · out: 1×1 conv 16→1, added to the input's first channel.
/// LeakyReLU(0.1) after every 3×3 convolution. Input sides must be multiples of 4. C is 1 (the
/// frame) or, with temporal context, 2 (the frame and a running average of the earlier frames; see
/// `TemporalContext`). One network serves one thread (its workspaces are reused from pass to pass).
// Not Sendable: layers and buffers of one network: used by one thread at a time (see the doc).
public final class UNet {
    /// What the network sees: one frame, or the frame and its temporal context (a running average of the earlier frames).
    public enum Input: Int, Sendable, CaseIterable {
        case frame = 1
        case frameAndHistory = 2

        /// The name a weights file and a frame header carry.
        public var architecture: String {
            switch self {
            case .frame: return "unet2-16-32-64-residual"
            case .frameAndHistory: return "unet2-16-32-64-addskip-residual-temporal"
            }
        }

        /// The decoder each input's network has.
        public var design: Design {
            switch self {
            case .frame: return .concatenating
            case .frameAndHistory: return .additive
            }
        }
    }

    /// How the decoder joins the coarse features and the encoder's skip at each scale.
    ///
    /// - `concatenating` (≈ 23 000 multiply-adds per pixel): up, concat the skip, 3×3 conv
    ///   (96→32, then 48→16). Learns fastest from scratch: the single-frame network, which starts
    ///   from scratch on SR frames and for the deconvolution term, uses it.
    /// - `additive` (≈ 14 400): a linear 1×1 projection at the coarse scale (64→32, then 32→16; it
    ///   commutes with the nearest-neighbour upsampling), up, add the skip, 3×3 conv (32→32, then
    ///   16→16). The decoder was 59 % of the concatenating network's multiply-adds; this one runs
    ///   1.8× as fast. From scratch it learns more slowly (1200 steps on the rig's filaments: 25.2 dB
    ///   against 27.5), trained long it is as good: the temporal network, which starts from the
    ///   shipped model, uses it.
    public enum Design: Sendable {
        case concatenating, additive

        /// One decoder step: an optional 1×1 projection, the join, the 3×3 convolution (indices into `convs`).
        struct Step {
            let projection: Int?
            let convolution: Int
            let concatenates: Bool
        }

        /// (in, out, kernel, stride) of each convolution, encoder first, output last.
        func specs(inputChannels: Int) -> [(Int, Int, Int, Int)] {
            let encoder = [
                (inputChannels, 16, 3, 1), (16, 16, 3, 1), (16, 32, 3, 2), (32, 32, 3, 1), (32, 64, 3, 2),
                (64, 64, 3, 1),
            ]
            switch self {
            case .concatenating: return encoder + [(96, 32, 3, 1), (48, 16, 3, 1), (16, 1, 1, 1)]
            case .additive:
                return encoder + [(64, 32, 1, 1), (32, 32, 3, 1), (32, 16, 1, 1), (16, 16, 3, 1), (16, 1, 1, 1)]
            }
        }

        /// Pixels of the input per output pixel of each convolution (as in `specs`).
        var downsampling: [Int] {
            switch self {
            case .concatenating: return [1, 1, 4, 4, 16, 16, 4, 1, 1]
            case .additive: return [1, 1, 4, 4, 16, 16, 16, 4, 4, 1, 1]
            }
        }

        /// The half-resolution step, then the full-resolution one.
        var steps: (half: Step, full: Step) {
            switch self {
            case .concatenating:
                return (
                    Step(projection: nil, convolution: 6, concatenates: true),
                    Step(projection: nil, convolution: 7, concatenates: true)
                )
            case .additive:
                return (
                    Step(projection: 6, convolution: 7, concatenates: false),
                    Step(projection: 8, convolution: 9, concatenates: false)
                )
            }
        }
    }

    public let input: Input
    public var architecture: String { input.architecture }
    public var design: Design { input.design }
    let engine: DNNLEngine
    public let convs: [Conv2D]
    let act: Activation
    let up: Upsample2x
    /// Activation memory reused from pass to pass: inference, training forward (what a Cache holds), backward.
    private let inferenceSpace = Workspace(), trainingSpace = Workspace(), gradientSpace = Workspace()

    /// Everything the backward pass needs from a forward pass. Its tensors live in the network's
    /// training workspace: a cache is good until the next forward pass with a cache.
    public final class Cache {
        var inputs: [Int: Tensor] = [:]  // input of each convolution, by its index
        var preActs: [Int: Tensor] = [:]  // output of each 3×3 convolution, before its activation
        var upsampled: [Int: Tensor] = [:]  // what each decoder step upsampled, by its convolution's index
        public init() {}
    }

    /// `leakyReLUSlope` 1 makes the network linear (its gradient tests are then exact).
    public init(engine: DNNLEngine, input: Input = .frame, seed: UInt64 = 1, leakyReLUSlope: Float = 0.1) {
        self.engine = engine
        self.input = input
        convs = input.design.specs(inputChannels: input.rawValue).enumerated().map { i, s in
            Conv2D(
                engine: engine, inChannels: s.0, outChannels: s.1, kernel: s.2, stride: s.3,
                seed: seed &+ UInt64(i) &* 7919)
        }
        // The residual branch starts near zero: the untrained network passes its input through.
        let output = convs[convs.count - 1]  // outputIndex: self is not ready yet
        for i in 0..<output.weights.count { output.weights[i] *= 0.1 }
        act = Activation(engine: engine, alpha: leakyReLUSlope)
        up = Upsample2x(engine: engine)
    }

    /// Multiply-adds per input pixel.
    public var macsPerPixel: Int {
        zip(convs, design.downsampling).map { $0.inChannels * $0.outChannels * $0.kernel * $0.kernel / $1 }.reduce(0, +)
    }

    public var parameters: [(Tensor, Tensor)] {
        convs.flatMap { [($0.weights, $0.gradWeights), ($0.bias, $0.gradBias)] }
    }
    public func zeroGradients() { convs.forEach { $0.zeroGradients() } }

    /// Index of the output convolution (the residual branch), the last one.
    var outputIndex: Int { convs.count - 1 }

    private func block(_ i: Int, _ x: Tensor, _ cache: Cache?, _ ws: Workspace) throws -> Tensor {
        guard let cache else {
            // Inference: the activation fused into the convolution.
            return try convs[i].forward(x, leakyReLUSlope: act.alpha, workspace: ws)
        }
        cache.inputs[i] = x
        let z = try convs[i].forward(x, workspace: ws)
        cache.preActs[i] = z
        return try act.forward(z, workspace: ws)
    }

    /// A decoder step: project `coarse` (when the step has a projection), upsample, join the skip, then its 3×3 block.
    private func decode(
        _ step: Design.Step, _ coarse: Tensor, skip: Tensor, _ cache: Cache?, _ ws: Workspace
    ) throws -> Tensor {
        var features = coarse
        if let projection = step.projection {
            cache?.inputs[projection] = coarse
            features = try convs[projection].forward(coarse, workspace: ws)
        }
        cache?.upsampled[step.convolution] = features
        // Adding the skip: upsampled and added in one pass (no upsampled tensor of its own); in
        // inference over the skip itself, which nothing reads afterwards.
        let merged =
            step.concatenates
            ? try TensorOps.concat(try up.forward(features, workspace: ws), skip, workspace: ws)
            : try TensorOps.upsampledSum(features, skip, workspace: ws, inPlace: cache == nil)
        return try block(step.convolution, merged, cache, ws)
    }

    /// Denoises `x` (`input.rawValue` channels, sides multiples of 4); with `cache`, keeps what backward needs.
    public func forward(_ x: Tensor, cache: Cache? = nil) throws -> Tensor {
        guard x.c == input.rawValue, x.h % 4 == 0, x.w % 4 == 0 else {
            throw MoireError(
                .usage,
                "the denoiser takes \(input.rawValue)-channel images with sides divisible by 4; got \(x.shape)")
        }
        let ws = cache == nil ? inferenceSpace : trainingSpace
        ws.reset()
        let e1 = try block(1, try block(0, x, cache, ws), cache, ws)
        let e2 = try block(3, try block(2, e1, cache, ws), cache, ws)
        let b = try block(5, try block(4, e2, cache, ws), cache, ws)
        let d2 = try decode(design.steps.half, b, skip: e2, cache, ws)
        let d1 = try decode(design.steps.full, d2, skip: e1, cache, ws)
        cache?.inputs[outputIndex] = d1
        let r = try convs[outputIndex].forward(d1, workspace: ws)
        return try TensorOps.firstChannel(of: x, plus: r)  // the output is the caller's own
    }

    /// Accumulates parameter gradients for dL/dy (no input gradient: never needed, and slow for one channel).
    public func backward(_ cache: Cache, gradOutput dy: Tensor) throws {
        guard cache.inputs.count == convs.count, cache.preActs.count == 8, cache.upsampled.count == 2 else {
            throw MoireError(.state, "backward needs the cache of a forward pass")
        }
        let inputs = cache.inputs
        let preActs = cache.preActs
        let ws = gradientSpace
        ws.reset()
        func activationBack(_ i: Int, _ g: Tensor) throws -> Tensor {
            try act.backward(preActs[i]!, gradOutput: g, workspace: ws)
        }
        func convBack(_ i: Int, _ g: Tensor) throws -> Tensor {
            try convs[i].backward(inputs[i]!, gradOutput: g, workspace: ws)!
        }
        /// Back through a decoder step (see `decode`): the gradient of its skip and of its coarse input.
        func decodeBack(_ step: Design.Step, _ g: Tensor) throws -> (skip: Tensor, coarse: Tensor) {
            let gMerged = try convBack(step.convolution, try activationBack(step.convolution, g))
            let features = cache.upsampled[step.convolution]!
            let (gUpsampled, gSkip) =
                step.concatenates
                ? TensorOps.split(gMerged, firstChannels: features.c, workspace: ws) : (gMerged, gMerged)
            let gFeatures = try up.backward(features, gradOutput: gUpsampled, workspace: ws)
            guard let projection = step.projection else { return (gSkip, gFeatures) }
            return (gSkip, try convBack(projection, gFeatures))
        }
        // out: y = x₀ + output(d1)
        let gd1 = try convBack(outputIndex, dy)
        let (gE1FromSkip, gd2) = try decodeBack(design.steps.full, gd1)
        let (gE2FromSkip, gb) = try decodeBack(design.steps.half, gd2)
        // bottom
        let g5 = try convBack(5, try activationBack(5, gb))
        let g4 = try convBack(4, try activationBack(4, g5))
        // enc2 output gradient: from the bottom and from the skip
        let gE2 = try TensorOps.add(g4, gE2FromSkip, workspace: ws)
        let g3 = try convBack(3, try activationBack(3, gE2))
        let g2 = try convBack(2, try activationBack(2, g3))
        let gE1 = try TensorOps.add(g2, gE1FromSkip, workspace: ws)
        let g1 = try convBack(1, try activationBack(1, gE1))
        try convs[0].backward(inputs[0]!, gradOutput: try activationBack(0, g1), needInputGradient: false)
    }
}
