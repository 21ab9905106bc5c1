import Foundation
import MoireCore

/// The denoiser: a 2-level U-Net (16/32/64 channels) with a residual output, ≈ 23 000 multiply-adds
/// per pixel, so it runs online on 2 cores.
///
/// enc1: conv C→16, conv 16→16 · enc2: conv/2 16→32, conv 32→32 · bottom: conv/2 32→64, conv 64→64 ·
/// dec2: up, concat enc2, conv 96→32 · dec1: up, concat enc1, conv 48→16 · out: 1×1 conv 16→1, added
/// to the input's first channel. LeakyReLU(0.1) after every 3×3 convolution. Input sides must be
/// multiples of 4. C is 1 (the frame) or, with temporal context, 2 (the frame and a running average
/// of the earlier frames; see `TemporalContext`). One network serves one thread (its workspaces are reused from
/// pass to pass).
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
            case .frameAndHistory: return "unet2-16-32-64-residual-temporal"
            }
        }
    }

    public let input: Input
    public var architecture: String { input.architecture }
    let engine: DNNLEngine
    public let convs: [Conv2D]
    let act: Activation
    let up: Upsample2x
    /// Activation memory reused from pass to pass: inference, training forward (what a Cache holds), backward.
    private let inferenceSpace = Workspace(), trainingSpace = Workspace(), gradientSpace = Workspace()

    /// Everything the backward pass needs from a forward pass. Its tensors live in the network's
    /// training workspace: a cache is good until the next forward pass with a cache.
    public final class Cache {
        var inputs: [Tensor] = []  // input of each convolution, in order
        var preActs: [Tensor] = []  // output of each 3×3 convolution, before its activation
        var enc1: Tensor?, enc2: Tensor?, bottom: Tensor?
        public init() {}
    }

    public init(engine: DNNLEngine, input: Input = .frame, seed: UInt64 = 1) {
        self.engine = engine
        self.input = input
        let specs: [(Int, Int, Int, Int)] = [
            (input.rawValue, 16, 3, 1), (16, 16, 3, 1), (16, 32, 3, 2), (32, 32, 3, 1), (32, 64, 3, 2), (64, 64, 3, 1),
            (96, 32, 3, 1), (48, 16, 3, 1), (16, 1, 1, 1),
        ]
        convs = specs.enumerated().map { i, s in
            Conv2D(
                engine: engine, inChannels: s.0, outChannels: s.1, kernel: s.2, stride: s.3,
                seed: seed &+ UInt64(i) &* 7919)
        }
        // The residual branch starts near zero: the untrained network passes its input through.
        for i in 0..<convs[8].weights.count { convs[8].weights[i] *= 0.1 }
        act = Activation(engine: engine, alpha: 0.1)
        up = Upsample2x(engine: engine)
    }

    /// Multiply-adds per input pixel.
    public var macsPerPixel: Int {
        let scale = [1, 1, 4, 4, 16, 16, 4, 1, 1]
        return zip(convs, scale).map { $0.inChannels * $0.outChannels * $0.kernel * $0.kernel / $1 }.reduce(0, +)
    }

    public var parameters: [(Tensor, Tensor)] {
        convs.flatMap { [($0.weights, $0.gradWeights), ($0.bias, $0.gradBias)] }
    }
    public func zeroGradients() { convs.forEach { $0.zeroGradients() } }

    private func block(_ i: Int, _ x: Tensor, _ cache: Cache?, _ ws: Workspace) throws -> Tensor {
        guard let cache else {
            // Inference: the activation fused into the convolution.
            return try convs[i].forward(x, leakyReLUSlope: act.alpha, workspace: ws)
        }
        cache.inputs.append(x)
        let z = try convs[i].forward(x, workspace: ws)
        cache.preActs.append(z)
        return try act.forward(z, workspace: ws)
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
        cache?.enc1 = e1; cache?.enc2 = e2; cache?.bottom = b
        let d2 = try block(6, try TensorOps.concat(try up.forward(b, workspace: ws), e2, workspace: ws), cache, ws)
        let d1 = try block(7, try TensorOps.concat(try up.forward(d2, workspace: ws), e1, workspace: ws), cache, ws)
        cache?.inputs.append(d1)
        let r = try convs[8].forward(d1, workspace: ws)
        guard input == .frameAndHistory else { return try TensorOps.add(x, r) }  // the output is the caller's own
        let (frame, _) = TensorOps.split(x, firstChannels: 1, workspace: ws)
        return try TensorOps.add(frame, r)
    }

    /// Accumulates parameter gradients for dL/dy (no input gradient: never needed, and slow for one channel).
    public func backward(_ cache: Cache, gradOutput dy: Tensor) throws {
        let inp = cache.inputs
        let pre = cache.preActs
        guard inp.count == 9, pre.count == 8, cache.enc1 != nil, cache.enc2 != nil, let b = cache.bottom else {
            throw MoireError(.state, "backward needs the cache of a forward pass")
        }
        let ws = gradientSpace
        ws.reset()
        func actBack(_ i: Int, _ g: Tensor) throws -> Tensor { try act.backward(pre[i], gradOutput: g, workspace: ws) }
        func convBack(_ i: Int, _ g: Tensor) throws -> Tensor {
            try convs[i].backward(inp[i], gradOutput: g, workspace: ws)!
        }
        // out: y = x₀ + conv8(d1)
        let gd1 = try convBack(8, dy)
        // dec1: d1 = act(conv7(concat(up(d2), e1)))
        let g7 = try convBack(7, try actBack(7, gd1))
        let (gUp1, gE1a) = TensorOps.split(g7, firstChannels: 32, workspace: ws)
        let gd2 = try up.backward(pre[6], gradOutput: gUp1, workspace: ws)  // shape of d2 = act(pre[6])
        // dec2: d2 = act(conv6(concat(up(b), e2)))
        let g6 = try convBack(6, try actBack(6, gd2))
        let (gUp2, gE2a) = TensorOps.split(g6, firstChannels: 64, workspace: ws)
        let gb = try up.backward(b, gradOutput: gUp2, workspace: ws)
        // bottom
        let g5 = try convBack(5, try actBack(5, gb))
        let g4 = try convBack(4, try actBack(4, g5))
        // enc2 output gradient: from the bottom and from the skip
        let gE2 = try TensorOps.add(g4, gE2a, workspace: ws)
        let g3 = try convBack(3, try actBack(3, gE2))
        let g2 = try convBack(2, try actBack(2, g3))
        let gE1 = try TensorOps.add(g2, gE1a, workspace: ws)
        let g1 = try convBack(1, try actBack(1, gE1))
        try convs[0].backward(inp[0], gradOutput: try actBack(0, g1), needInputGradient: false)
    }
}
