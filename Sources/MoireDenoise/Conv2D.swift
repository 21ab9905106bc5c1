import CDNNL
import CWinograd
import Foundation
import MoireCore
import Synchronization

/// How a 3×3, stride-1 convolution with channels a multiple of 8 is computed in inference.
public enum InferenceConvolution: String, Sendable, CaseIterable {
    /// Winograd F(4×4, 3×3) (`CWinograd`) where the CPU has AVX2 and FMA, else direct. Measured
    /// faster than oneDNN 2.6's direct convolutions on AVX2 (which has no Winograd there) and on
    /// AVX-512 alike (docs/denoising.md).
    case winograd
    /// oneDNN's direct convolution.
    case direct
}

/// A copy of the plain weights that a derived form of them (a reordered or a Winograd-transformed
/// buffer) was last made from: the form is made again only when the weights differ from it, which
/// in inference with a frozen model is never.
struct WeightsSnapshot {
    private var values: [Float]?

    /// Whether the form made from the snapshot is still the form of `plain`.
    func matches(_ plain: UnsafeBufferPointer<Float>) -> Bool { values?.elementsEqual(plain) ?? false }

    /// Records `plain` as what the form was made from (in place after the first time: after every
    /// adaptation step, without a new array).
    mutating func record(_ plain: UnsafeBufferPointer<Float>) {
        if values == nil {
            values = Array(plain)
        } else {
            values!.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: plain) }
        }
    }
}

/// A 2D convolution (k×k, stride 1 or 2, "same"-style padding) with bias, forward and backward
/// through oneDNN primitives created once per input shape and reused.
///
/// Activations are channels-last; weights are kept OIHW (what the weights file stores and the
/// optimiser updates) and reordered into the layout oneDNN's convolution asks for (`format_tag_any`,
/// a blocked layout on AVX-512/AVX2) before use; weight gradients come back the same way.
/// `backward` accumulates into `gradWeights` and `gradBias`, and returns the input gradient unless
/// asked not to (a first layer never needs it).
// Not Sendable: oneDNN primitives and weights: used by the one thread that trains or infers with its network.
public final class Conv2D {
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int
    public let weights: Tensor, bias: Tensor
    public let gradWeights: Tensor, gradBias: Tensor
    let engine: DNNLEngine
    private var plans: [String: Plan] = [:]
    /// The weights transformed for Winograd (36 × in × out floats; nil: not yet), and the plain
    /// weights they were transformed from.
    private var winogradWeights: UnsafeMutablePointer<Float>?
    private var winogradFrom = WeightsSnapshot()

    /// This convolution's own choice of inference algorithm (nil: the process's, `inferenceConvolution`).
    public var convolution: InferenceConvolution?

    private static let inferenceChoice = Mutex(InferenceConvolution.winograd)
    /// How this process computes inference convolutions (set before the networks run: `moire bench
    /// denoise --convolution`).
    public static var inferenceConvolution: InferenceConvolution {
        get { inferenceChoice.withLock { $0 } }
        set { inferenceChoice.withLock { $0 = newValue } }
    }

    /// Whether Winograd runs on this machine at all (AVX2 and FMA).
    public static let winogradSupported = moire_winograd_supported() != 0

    /// A buffer in the layout a primitive chose, with reorders to and from the plain OIHW weights.
    final class Packed {
        let md: dnnl_memory_desc_t
        let data: UnsafeMutablePointer<Float>?  // nil when the chosen layout is OIHW itself
        var toPacked: (dnnl_primitive_desc_t?, dnnl_primitive_t?) = (nil, nil)
        var fromPacked: (dnnl_primitive_desc_t?, dnnl_primitive_t?) = (nil, nil)
        /// The plain weights that `data` was last reordered from.
        var packedFrom = WeightsSnapshot()
        init(engine: DNNLEngine, chosen: dnnl_memory_desc_t, plain: dnnl_memory_desc_t) throws {
            var c = chosen
            var p = plain
            md = chosen
            if dnnl_memory_desc_equal(&c, &p) != 0 { data = nil; return }
            let bytes = dnnl_memory_desc_get_size(&c)
            data = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64).bindMemory(
                to: Float.self, capacity: bytes / 4)
            toPacked = try engine.reorder(from: plain, to: chosen)
            fromPacked = try engine.reorder(from: chosen, to: plain)
        }
        deinit {
            if let data { UnsafeMutableRawPointer(data).deallocate() }
            for p in [toPacked.1, fromPacked.1] { if let p { dnnl_primitive_destroy(p) } }
            for d in [toPacked.0, fromPacked.0] { if let d { dnnl_primitive_desc_destroy(d) } }
        }
    }

    final class Plan {
        var fwdPD: dnnl_primitive_desc_t?, fwd: dnnl_primitive_t?
        /// Inference with the activation fused (a LeakyReLU post-op): one pass over the output
        /// instead of two. Made when first asked for.
        var fusedPD: dnnl_primitive_desc_t?, fused: dnnl_primitive_t?, fusedWeights: Packed?
        var fusedSlope: Float?
        var bwdDataPD: dnnl_primitive_desc_t?, bwdData: dnnl_primitive_t?
        var bwdWeightsPD: dnnl_primitive_desc_t?, bwdWeights: dnnl_primitive_t?
        var srcMD = dnnl_memory_desc_t(), dstMD = dnnl_memory_desc_t(), bMD = dnnl_memory_desc_t()
        var fwdWeights: Packed?, bwdDataWeights: Packed?, diffWeights: Packed?
        var outH = 0, outW = 0
        let gw: Tensor, gb: Tensor  // this pass's weight and bias gradients, before accumulation
        init(gw: Tensor, gb: Tensor) { self.gw = gw; self.gb = gb }
        deinit {
            for p in [fwd, bwdData, bwdWeights, fused] { if let p { dnnl_primitive_destroy(p) } }
            for d in [fwdPD, bwdDataPD, bwdWeightsPD, fusedPD] { if let d { dnnl_primitive_desc_destroy(d) } }
        }
    }

    /// He-initialised weights (normal, σ = √(2 / fan-in)), zero bias, from `seed`.
    public init(engine: DNNLEngine, inChannels: Int, outChannels: Int, kernel: Int = 3, stride: Int = 1, seed: UInt64) {
        precondition(kernel % 2 == 1 && (stride == 1 || stride == 2))
        self.engine = engine
        self.inChannels = inChannels; self.outChannels = outChannels; self.kernel = kernel; self.stride = stride
        weights = Tensor(n: outChannels, c: inChannels, h: kernel, w: kernel, layout: .nchw)
        bias = Tensor(n: 1, c: outChannels, h: 1, w: 1, layout: .nchw)
        gradWeights = Tensor(n: outChannels, c: inChannels, h: kernel, w: kernel, layout: .nchw)
        gradBias = Tensor(n: 1, c: outChannels, h: 1, w: 1, layout: .nchw)
        var rng = SeededRandom(seed: seed)
        let sigma = (2 / Double(inChannels * kernel * kernel)).squareRoot()
        for i in 0..<weights.count { weights[i] = Float(rng.normal() * sigma) }
    }

    /// Output height and width for an input of `h × w`.
    public func outputSize(h: Int, w: Int) -> (Int, Int) {
        let pad = kernel / 2
        return ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1)
    }

    private func plan(for x: Tensor, needInputGradient: Bool) throws -> Plan {
        let key = "\(x.n)x\(x.c)x\(x.h)x\(x.w)\(x.layout)"
        let p: Plan
        if let known = plans[key] {
            p = known
        } else {
            guard x.c == inChannels else {
                throw MoireError(.usage, "convolution expects \(inChannels) input channels; got \(x.c)")
            }
            p = Plan(
                gw: Tensor(n: outChannels, c: inChannels, h: kernel, w: kernel, layout: .nchw),
                gb: Tensor(n: 1, c: outChannels, h: 1, w: 1, layout: .nchw))
            let (oh, ow) = outputSize(h: x.h, w: x.w)
            p.outH = oh; p.outW = ow
            p.srcMD = try engine.md(x)
            p.dstMD = try engine.md([x.n, outChannels, oh, ow], x.layout == .nchw ? dnnl_nchw : dnnl_nhwc)
            p.bMD = try engine.md([outChannels], dnnl_x)
            let plainW = try engine.md([outChannels, inChannels, kernel, kernel], dnnl_oihw)
            var anyW = try engine.md([outChannels, inChannels, kernel, kernel], dnnl_format_tag_any)
            var fd = try descriptors(p, anyW: &anyW)
            p.fwdPD = try engine.primitiveDescriptor("convolution forward", &fd.fwd)
            try dnnlCall("convolution forward", dnnl_primitive_create(&p.fwd, p.fwdPD))
            p.fwdWeights = try Packed(
                engine: engine, chosen: dnnl_primitive_desc_query_md(p.fwdPD, dnnl_query_weights_md, 0)!.pointee,
                plain: plainW)
            p.bwdWeightsPD = try engine.primitiveDescriptor("convolution backward-weights", &fd.bwdW, hint: p.fwdPD)
            try dnnlCall("convolution backward-weights", dnnl_primitive_create(&p.bwdWeights, p.bwdWeightsPD))
            p.diffWeights = try Packed(
                engine: engine,
                chosen: dnnl_primitive_desc_query_md(p.bwdWeightsPD, dnnl_query_diff_weights_md, 0)!.pointee,
                plain: plainW)
            plans[key] = p
        }
        if needInputGradient, p.bwdData == nil {
            // Made only when asked for: a one-channel first layer's data gradient is never needed (and slow).
            var anyW = try engine.md([outChannels, inChannels, kernel, kernel], dnnl_format_tag_any)
            var fd = try descriptors(p, anyW: &anyW)
            p.bwdDataPD = try engine.primitiveDescriptor("convolution backward-data", &fd.bwdD, hint: p.fwdPD)
            try dnnlCall("convolution backward-data", dnnl_primitive_create(&p.bwdData, p.bwdDataPD))
            p.bwdDataWeights = try Packed(
                engine: engine, chosen: dnnl_primitive_desc_query_md(p.bwdDataPD, dnnl_query_weights_md, 0)!.pointee,
                plain: try engine.md([outChannels, inChannels, kernel, kernel], dnnl_oihw))
        }
        return p
    }

    private func descriptors(
        _ p: Plan, anyW: inout dnnl_memory_desc_t, propagation: dnnl_prop_kind_t = dnnl_forward_training
    ) throws
        -> (fwd: dnnl_convolution_desc_t, bwdD: dnnl_convolution_desc_t, bwdW: dnnl_convolution_desc_t)
    {
        let pad = kernel / 2
        let h = Int(p.srcMD.dims.2)
        let w = Int(p.srcMD.dims.3)
        let padR = [(p.outH - 1) * stride + kernel - h - pad, (p.outW - 1) * stride + kernel - w - pad].map(Int64.init)
        let padL: [Int64] = [Int64(pad), Int64(pad)]
        let strides: [Int64] = [Int64(stride), Int64(stride)]
        var fd = dnnl_convolution_desc_t()
        var bd = dnnl_convolution_desc_t()
        var wd = dnnl_convolution_desc_t()
        try dnnlCall(
            "convolution forward desc",
            dnnl_convolution_forward_desc_init(
                &fd, propagation, dnnl_convolution_direct,
                &p.srcMD, &anyW, &p.bMD, &p.dstMD, strides, padL, padR))
        try dnnlCall(
            "convolution backward-data desc",
            dnnl_convolution_backward_data_desc_init(
                &bd, dnnl_convolution_direct, &p.srcMD, &anyW,
                &p.dstMD, strides, padL, padR))
        try dnnlCall(
            "convolution backward-weights desc",
            dnnl_convolution_backward_weights_desc_init(
                &wd, dnnl_convolution_direct, &p.srcMD,
                &anyW, &p.bMD, &p.dstMD, strides, padL, padR))
        return (fd, bd, wd)
    }

    /// The weights as the primitive wants them (reordered from OIHW when its layout differs, and
    /// only when they changed since the last reorder).
    private func packedWeights(_ packed: Packed) throws -> UnsafeMutablePointer<Float> {
        guard let data = packed.data else { return weights.data }
        let plain = UnsafeBufferPointer(start: weights.data, count: weights.count)
        if packed.packedFrom.matches(plain) { return data }
        try engine.run(
            packed.toPacked.1,
            [(DNNL_ARG_FROM, try engine.md(weights.shape, dnnl_oihw), weights.data), (DNNL_ARG_TO, packed.md, data)])
        packed.packedFrom.record(plain)
        return data
    }

    /// The inference primitive of `p` with LeakyReLU(`slope`) fused into it.
    private func fusedPrimitive(_ p: Plan, slope: Float) throws -> Plan {
        if p.fused != nil, p.fusedSlope == slope { return p }
        if let f = p.fused { dnnl_primitive_destroy(f) }
        if let d = p.fusedPD { dnnl_primitive_desc_destroy(d) }
        p.fused = nil
        p.fusedPD = nil
        var anyW = try engine.md([outChannels, inChannels, kernel, kernel], dnnl_format_tag_any)
        var fd = try descriptors(p, anyW: &anyW, propagation: dnnl_forward_inference).fwd
        p.fusedPD = try engine.primitiveDescriptor("fused convolution", &fd, leakyReLUSlope: slope)
        try dnnlCall("fused convolution", dnnl_primitive_create(&p.fused, p.fusedPD))
        p.fusedWeights = try Packed(
            engine: engine, chosen: dnnl_primitive_desc_query_md(p.fusedPD, dnnl_query_weights_md, 0)!.pointee,
            plain: try engine.md([outChannels, inChannels, kernel, kernel], dnnl_oihw))
        p.fusedSlope = slope
        return p
    }

    /// y = LeakyReLU(W ⊛ x + b) with negative slope `slope`, in one primitive (inference only: a
    /// training pass keeps the pre-activation for backward). Through Winograd when
    /// `inferenceConvolution` says so for this convolution (`runsWinograd`).
    public func forward(_ x: Tensor, leakyReLUSlope slope: Float, workspace ws: Workspace? = nil) throws -> Tensor {
        let p = try fusedPrimitive(try plan(for: x, needInputGradient: false), slope: slope)
        if runsWinograd, x.layout == .nhwc, let y = try winogradForward(x, p, slope: slope, workspace: ws) {
            return y
        }
        return try forward(x, p, primitive: p.fused, weights: p.fusedWeights!, workspace: ws)
    }

    /// Whether inference runs through Winograd: a 3×3, stride-1 convolution with channels a multiple
    /// of 8, as `inferenceConvolution` chooses on this machine.
    public var runsWinograd: Bool {
        guard kernel == 3, stride == 1, inChannels % 8 == 0, outChannels % 8 == 0, Self.winogradSupported else {
            return false
        }
        return (convolution ?? Self.inferenceConvolution) == .winograd
    }

    /// The fused forward pass through `CWinograd` into plan `p`'s output shape; nil when the kernel
    /// declines (then oneDNN runs it).
    private func winogradForward(_ x: Tensor, _ p: Plan, slope: Float, workspace ws: Workspace?) throws -> Tensor? {
        let y =
            ws?.tensor(n: x.n, c: outChannels, h: p.outH, w: p.outW, layout: x.layout)
            ?? Tensor(n: x.n, c: outChannels, h: p.outH, w: p.outW, layout: x.layout)
        var conv = moire_winograd_conv(
            src: x.data, batch: Int32(x.n), height: Int32(x.h), width: Int32(x.w), in_channels: Int32(inChannels),
            transformed_weights: transformedWeights(), bias: bias.data, out_channels: Int32(outChannels),
            leaky_relu: 1, slope: slope, dst: y.data)
        guard moire_winograd_run(&conv) == 0 else { return nil }
        winogradPasses += 1
        return y
    }

    /// Inference passes that ran through Winograd.
    public private(set) var winogradPasses = 0

    /// The weights in Winograd's domain, transformed again only when they changed.
    private func transformedWeights() -> UnsafePointer<Float> {
        let plain = UnsafeBufferPointer(start: weights.data, count: weights.count)
        if let done = winogradWeights, winogradFrom.matches(plain) { return UnsafePointer(done) }
        let transformed =
            winogradWeights
            ?? UnsafeMutableRawPointer.allocate(byteCount: 36 * inChannels * outChannels * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: 36 * inChannels * outChannels)
        winogradWeights = transformed
        moire_winograd_transform_weights(weights.data, Int32(outChannels), Int32(inChannels), transformed)
        winogradFrom.record(plain)
        return UnsafePointer(transformed)
    }

    deinit {
        if let winogradWeights { UnsafeMutableRawPointer(winogradWeights).deallocate() }
    }

    /// y = W ⊛ x + b.
    public func forward(_ x: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        let p = try plan(for: x, needInputGradient: false)
        return try forward(x, p, primitive: p.fwd, weights: p.fwdWeights!, workspace: ws)
    }

    /// Runs forward primitive `primitive` of plan `p` (its weights in `packed`'s layout) on `x`.
    private func forward(
        _ x: Tensor, _ p: Plan, primitive: dnnl_primitive_t?, weights packed: Packed, workspace ws: Workspace?
    ) throws -> Tensor {
        let y =
            ws?.tensor(n: x.n, c: outChannels, h: p.outH, w: p.outW, layout: x.layout)
            ?? Tensor(n: x.n, c: outChannels, h: p.outH, w: p.outW, layout: x.layout)
        let w = try packedWeights(packed)
        try engine.run(
            primitive,
            [
                (DNNL_ARG_SRC, p.srcMD, x.data), (DNNL_ARG_WEIGHTS, packed.md, w),
                (DNNL_ARG_BIAS, p.bMD, bias.data),
                (DNNL_ARG_DST, p.dstMD, y.data),
            ])
        return y
    }

    /// Accumulates dL/dW and dL/db for input `x` and output gradient `dy`; returns dL/dx when `needInputGradient`.
    @discardableResult
    public func backward(
        _ x: Tensor, gradOutput dy: Tensor, needInputGradient: Bool = true, workspace ws: Workspace? = nil
    ) throws -> Tensor? {
        let p = try plan(for: x, needInputGradient: needInputGradient)
        guard dy.c == outChannels, dy.h == p.outH, dy.w == p.outW, dy.n == x.n, dy.layout == x.layout else {
            throw MoireError(
                .usage, "output gradient is \(dy.shape); expected [\(x.n), \(outChannels), \(p.outH), \(p.outW)]")
        }
        let plainW = try engine.md(weights.shape, dnnl_oihw)
        let gw = p.gw
        let gb = p.gb
        let dw = p.diffWeights!
        try engine.run(
            p.bwdWeights,
            [
                (DNNL_ARG_SRC, p.srcMD, x.data), (DNNL_ARG_DIFF_DST, p.dstMD, dy.data),
                (DNNL_ARG_DIFF_WEIGHTS, dw.md, dw.data ?? gw.data), (DNNL_ARG_DIFF_BIAS, p.bMD, gb.data),
            ])
        if let packed = dw.data {
            try engine.run(dw.fromPacked.1, [(DNNL_ARG_FROM, dw.md, packed), (DNNL_ARG_TO, plainW, gw.data)])
        }
        for i in 0..<gw.count { gradWeights[i] += gw[i] }
        for i in 0..<gb.count { gradBias[i] += gb[i] }
        guard needInputGradient else { return nil }
        let dx = ws?.like(x) ?? x.like()
        let w = try packedWeights(p.bwdDataWeights!)
        try engine.run(
            p.bwdData,
            [
                (DNNL_ARG_DIFF_DST, p.dstMD, dy.data), (DNNL_ARG_WEIGHTS, p.bwdDataWeights!.md, w),
                (DNNL_ARG_DIFF_SRC, p.srcMD, dx.data),
            ])
        return dx
    }

    public func zeroGradients() { gradWeights.zero(); gradBias.zero() }
}
