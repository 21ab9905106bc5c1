import CDNNL
import Foundation
import MoireCore

/// A 2D convolution (k×k, stride 1 or 2, "same"-style padding) with bias, forward and backward
/// through oneDNN primitives created once per input shape and reused.
///
/// Weights are OIHW, bias per output channel. `backward` accumulates into `gradWeights` and
/// `gradBias`, and returns the input gradient unless asked not to (a first layer never needs it).
public final class Conv2D: @unchecked Sendable {
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int
    public let weights: Tensor, bias: Tensor
    public let gradWeights: Tensor, gradBias: Tensor
    let engine: DNNLEngine
    private var plans: [String: Plan] = [:]

    final class Plan {
        var fwdPD: dnnl_primitive_desc_t?, fwd: dnnl_primitive_t?
        var bwdDataPD: dnnl_primitive_desc_t?, bwdData: dnnl_primitive_t?
        var bwdWeightsPD: dnnl_primitive_desc_t?, bwdWeights: dnnl_primitive_t?
        var srcMD = dnnl_memory_desc_t(), dstMD = dnnl_memory_desc_t(), wMD = dnnl_memory_desc_t(), bMD = dnnl_memory_desc_t()
        var outH = 0, outW = 0
        deinit {
            for p in [fwd, bwdData, bwdWeights] { if let p { dnnl_primitive_destroy(p) } }
            for d in [fwdPD, bwdDataPD, bwdWeightsPD] { if let d { dnnl_primitive_desc_destroy(d) } }
        }
    }

    /// He-initialised weights (normal, σ = √(2 / fan-in)), zero bias, from `seed`.
    public init(engine: DNNLEngine, inChannels: Int, outChannels: Int, kernel: Int = 3, stride: Int = 1, seed: UInt64) {
        precondition(kernel % 2 == 1 && (stride == 1 || stride == 2))
        self.engine = engine
        self.inChannels = inChannels; self.outChannels = outChannels; self.kernel = kernel; self.stride = stride
        weights = Tensor(n: outChannels, c: inChannels, h: kernel, w: kernel)
        bias = Tensor(n: 1, c: outChannels, h: 1, w: 1)
        gradWeights = Tensor(n: outChannels, c: inChannels, h: kernel, w: kernel)
        gradBias = Tensor(n: 1, c: outChannels, h: 1, w: 1)
        var rng = SeededRandom(seed: seed)
        let sigma = (2 / Double(inChannels * kernel * kernel)).squareRoot()
        for i in 0..<weights.count { weights[i] = Float(rng.normal() * sigma) }
    }

    /// Output height and width for an input of `h × w`.
    public func outputSize(h: Int, w: Int) -> (Int, Int) {
        let pad = kernel / 2
        return ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1)
    }

    private func md(_ dims: [Int], _ tag: dnnl_format_tag_t) throws -> dnnl_memory_desc_t { try engine.md(dims, tag) }

    private func plan(for x: Tensor) throws -> Plan {
        let key = "\(x.n)x\(x.c)x\(x.h)x\(x.w)"
        if let p = plans[key] { return p }
        guard x.c == inChannels else { throw MoireError(.usage, "convolution expects \(inChannels) input channels; got \(x.c)") }
        let p = Plan()
        let (oh, ow) = outputSize(h: x.h, w: x.w)
        p.outH = oh; p.outW = ow
        let pad = kernel / 2
        let padR = [(oh - 1) * stride + kernel - x.h - pad, (ow - 1) * stride + kernel - x.w - pad].map(Int64.init)
        let padL: [Int64] = [Int64(pad), Int64(pad)], strides: [Int64] = [Int64(stride), Int64(stride)]
        p.srcMD = try md([x.n, x.c, x.h, x.w], dnnl_nchw)
        p.dstMD = try md([x.n, outChannels, oh, ow], dnnl_nchw)
        p.wMD = try md([outChannels, inChannels, kernel, kernel], dnnl_oihw)
        p.bMD = try md([outChannels], dnnl_x)
        var fd = dnnl_convolution_desc_t()
        try dnnlCall("convolution forward desc", dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                                                                   &p.srcMD, &p.wMD, &p.bMD, &p.dstMD, strides, padL, padR))
        try dnnlCall("convolution forward pd", dnnl_primitive_desc_create(&p.fwdPD, &fd, nil, engine.engine, nil))
        try dnnlCall("convolution forward", dnnl_primitive_create(&p.fwd, p.fwdPD))
        var bd = dnnl_convolution_desc_t()
        try dnnlCall("convolution backward-data desc", dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &p.srcMD, &p.wMD,
                                                                                              &p.dstMD, strides, padL, padR))
        try dnnlCall("convolution backward-data pd", dnnl_primitive_desc_create(&p.bwdDataPD, &bd, nil, engine.engine, p.fwdPD))
        try dnnlCall("convolution backward-data", dnnl_primitive_create(&p.bwdData, p.bwdDataPD))
        var wd = dnnl_convolution_desc_t()
        try dnnlCall("convolution backward-weights desc", dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &p.srcMD,
                                                                                                    &p.wMD, &p.bMD, &p.dstMD, strides, padL, padR))
        try dnnlCall("convolution backward-weights pd", dnnl_primitive_desc_create(&p.bwdWeightsPD, &wd, nil, engine.engine, p.fwdPD))
        try dnnlCall("convolution backward-weights", dnnl_primitive_create(&p.bwdWeights, p.bwdWeightsPD))
        plans[key] = p
        return p
    }

    private func run(_ prim: dnnl_primitive_t?, _ args: [(Int32, dnnl_memory_desc_t, UnsafeMutablePointer<Float>)]) throws {
        try engine.run(prim, args)
    }

    /// y = W ⊛ x + b.
    public func forward(_ x: Tensor) throws -> Tensor {
        let p = try plan(for: x)
        let y = Tensor(n: x.n, c: outChannels, h: p.outH, w: p.outW)
        try run(p.fwd, [(DNNL_ARG_SRC, p.srcMD, x.data), (DNNL_ARG_WEIGHTS, p.wMD, weights.data), (DNNL_ARG_BIAS, p.bMD, bias.data),
                        (DNNL_ARG_DST, p.dstMD, y.data)])
        return y
    }

    /// Accumulates dL/dW and dL/db for input `x` and output gradient `dy`; returns dL/dx when `needInputGradient`.
    @discardableResult
    public func backward(_ x: Tensor, gradOutput dy: Tensor, needInputGradient: Bool = true) throws -> Tensor? {
        let p = try plan(for: x)
        guard dy.c == outChannels, dy.h == p.outH, dy.w == p.outW, dy.n == x.n else {
            throw MoireError(.usage, "output gradient is \(dy.shape); expected [\(x.n), \(outChannels), \(p.outH), \(p.outW)]")
        }
        let gw = Tensor(n: outChannels, c: inChannels, h: kernel, w: kernel), gb = Tensor(n: 1, c: outChannels, h: 1, w: 1)
        try run(p.bwdWeights, [(DNNL_ARG_SRC, p.srcMD, x.data), (DNNL_ARG_DIFF_DST, p.dstMD, dy.data),
                               (DNNL_ARG_DIFF_WEIGHTS, p.wMD, gw.data), (DNNL_ARG_DIFF_BIAS, p.bMD, gb.data)])
        for i in 0..<gw.count { gradWeights[i] += gw[i] }
        for i in 0..<gb.count { gradBias[i] += gb[i] }
        guard needInputGradient else { return nil }
        let dx = Tensor(n: x.n, c: x.c, h: x.h, w: x.w)
        try run(p.bwdData, [(DNNL_ARG_DIFF_DST, p.dstMD, dy.data), (DNNL_ARG_WEIGHTS, p.wMD, weights.data), (DNNL_ARG_DIFF_SRC, p.srcMD, dx.data)])
        return dx
    }

    public func zeroGradients() { gradWeights.zero(); gradBias.zero() }
}
