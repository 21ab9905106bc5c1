import CDNNL
import Foundation
import MoireCore

/// Leaky ReLU (`alpha` = 0: ReLU), forward and backward through oneDNN's eltwise primitives.
// Not Sendable: layer buffers, used by the one thread that runs its network.
public final class Activation {
    public let alpha: Float
    let engine: DNNLEngine
    private var plans:
        [String: (
            md: dnnl_memory_desc_t, fwd: dnnl_primitive_t?, bwd: dnnl_primitive_t?, pds: [dnnl_primitive_desc_t?]
        )] = [:]

    public init(engine: DNNLEngine, alpha: Float = 0.1) { self.engine = engine; self.alpha = alpha }

    deinit {
        for p in plans.values {
            for q in [p.fwd, p.bwd] { if let q { dnnl_primitive_destroy(q) } }
            for d in p.pds { if let d { dnnl_primitive_desc_destroy(d) } }
        }
    }

    private func plan(_ x: Tensor) throws -> (
        md: dnnl_memory_desc_t, fwd: dnnl_primitive_t?, bwd: dnnl_primitive_t?, pds: [dnnl_primitive_desc_t?]
    ) {
        let key = x.shape.map(String.init).joined(separator: "x") + "\(x.layout)"
        if let p = plans[key] { return p }
        var md = try engine.md(x)
        var fd = dnnl_eltwise_desc_t()
        try dnnlCall(
            "eltwise forward desc",
            dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, dnnl_eltwise_relu, &md, alpha, 0))
        let (fpd, fwd) = try engine.primitive("eltwise forward", &fd)
        var bd = dnnl_eltwise_desc_t()
        try dnnlCall(
            "eltwise backward desc", dnnl_eltwise_backward_desc_init(&bd, dnnl_eltwise_relu, &md, &md, alpha, 0))
        let (bpd, bwd) = try engine.primitive("eltwise backward", &bd, hint: fpd)
        let p = (md, fwd, bwd, [fpd, bpd])
        plans[key] = p
        return p
    }

    public func forward(_ x: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        let p = try plan(x)
        let y = ws?.like(x) ?? x.like()
        try engine.run(p.fwd, [(DNNL_ARG_SRC, p.md, x.data), (DNNL_ARG_DST, p.md, y.data)])
        return y
    }

    /// dL/dx from the layer's input `x` and dL/dy.
    public func backward(_ x: Tensor, gradOutput dy: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        let p = try plan(x)
        let dx = ws?.like(x) ?? x.like()
        try engine.run(
            p.bwd,
            [(DNNL_ARG_SRC, p.md, x.data), (DNNL_ARG_DIFF_DST, p.md, dy.data), (DNNL_ARG_DIFF_SRC, p.md, dx.data)])
        return dx
    }
}

/// 2× nearest-neighbour upsampling, forward and backward through oneDNN's resampling primitives.
// Not Sendable: layer buffers, used by the one thread that runs its network.
public final class Upsample2x {
    let engine: DNNLEngine
    private var plans:
        [String: (
            src: dnnl_memory_desc_t, dst: dnnl_memory_desc_t, fwd: dnnl_primitive_t?, bwd: dnnl_primitive_t?,
            pds: [dnnl_primitive_desc_t?]
        )] = [:]

    public init(engine: DNNLEngine) { self.engine = engine }

    deinit {
        for p in plans.values {
            for q in [p.fwd, p.bwd] { if let q { dnnl_primitive_destroy(q) } }
            for d in p.pds { if let d { dnnl_primitive_desc_destroy(d) } }
        }
    }

    private func plan(_ x: Tensor) throws -> (
        src: dnnl_memory_desc_t, dst: dnnl_memory_desc_t, fwd: dnnl_primitive_t?, bwd: dnnl_primitive_t?,
        pds: [dnnl_primitive_desc_t?]
    ) {
        let key = x.shape.map(String.init).joined(separator: "x") + "\(x.layout)"
        if let p = plans[key] { return p }
        var src = try engine.md(x)
        var dst = try engine.md([x.n, x.c, 2 * x.h, 2 * x.w], x.layout == .nchw ? dnnl_nchw : dnnl_nhwc)
        let factors: [Float] = [2, 2]
        var fd = dnnl_resampling_desc_t()
        try dnnlCall(
            "resampling forward desc",
            dnnl_resampling_forward_desc_init(&fd, dnnl_forward_training, dnnl_resampling_nearest, factors, &src, &dst))
        let (fpd, fwd) = try engine.primitive("resampling forward", &fd)
        var bd = dnnl_resampling_desc_t()
        try dnnlCall(
            "resampling backward desc",
            dnnl_resampling_backward_desc_init(&bd, dnnl_resampling_nearest, factors, &src, &dst))
        let (bpd, bwd) = try engine.primitive("resampling backward", &bd, hint: fpd)
        let p = (src, dst, fwd, bwd, [fpd, bpd])
        plans[key] = p
        return p
    }

    public func forward(_ x: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        let p = try plan(x)
        let y =
            ws?.tensor(n: x.n, c: x.c, h: 2 * x.h, w: 2 * x.w, layout: x.layout)
            ?? Tensor(n: x.n, c: x.c, h: 2 * x.h, w: 2 * x.w, layout: x.layout)
        try engine.run(p.fwd, [(DNNL_ARG_SRC, p.src, x.data), (DNNL_ARG_DST, p.dst, y.data)])
        return y
    }

    public func backward(_ x: Tensor, gradOutput dy: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        let p = try plan(x)
        let dx = ws?.like(x) ?? x.like()
        try engine.run(p.bwd, [(DNNL_ARG_DIFF_DST, p.dst, dy.data), (DNNL_ARG_DIFF_SRC, p.src, dx.data)])
        return dx
    }
}

/// Element-wise sums, channel concatenation and its split (the concatenation's backward pass), for
/// channels-last tensors (and one-channel tensors, where both layouts agree).
public enum TensorOps {
    public static func add(_ a: Tensor, _ b: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        guard a.shape == b.shape, a.layout == b.layout else {
            throw MoireError(.usage, "cannot add tensors of shapes \(a.shape) and \(b.shape)")
        }
        let y = ws?.like(a) ?? a.like()
        nonisolated(unsafe) let (sum, left, right) = (y.data, a.data, b.data)
        parallelRanges(a.count, grain: 65_536) { range in
            for i in range { sum[i] = left[i] + right[i] }
        }
        return y
    }

    public static func concat(_ a: Tensor, _ b: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        guard a.n == b.n, a.h == b.h, a.w == b.w, a.layout == .nhwc, b.layout == .nhwc else {
            throw MoireError(.usage, "cannot concatenate \(a.shape) and \(b.shape)")
        }
        let y =
            ws?.tensor(n: a.n, c: a.c + b.c, h: a.h, w: a.w)
            ?? Tensor(n: a.n, c: a.c + b.c, h: a.h, w: a.w, layout: .nhwc)
        for p in 0..<(a.n * a.h * a.w) {
            (y.data + p * y.c).update(from: a.data + p * a.c, count: a.c)
            (y.data + p * y.c + a.c).update(from: b.data + p * b.c, count: b.c)
        }
        return y
    }

    /// The gradients of the two parts of a concatenation.
    public static func split(_ dy: Tensor, firstChannels c: Int, workspace ws: Workspace? = nil) -> (Tensor, Tensor) {
        precondition(dy.layout == .nhwc && c > 0 && c < dy.c)
        let a = ws?.tensor(n: dy.n, c: c, h: dy.h, w: dy.w) ?? Tensor(n: dy.n, c: c, h: dy.h, w: dy.w, layout: .nhwc)
        let b =
            ws?.tensor(n: dy.n, c: dy.c - c, h: dy.h, w: dy.w)
            ?? Tensor(n: dy.n, c: dy.c - c, h: dy.h, w: dy.w, layout: .nhwc)
        for p in 0..<(dy.n * dy.h * dy.w) {
            (a.data + p * c).update(from: dy.data + p * dy.c, count: c)
            (b.data + p * b.c).update(from: dy.data + p * dy.c + c, count: b.c)
        }
        return (a, b)
    }

    /// `coarse` upsampled 2× (nearest neighbour, as `Upsample2x`) plus `skip`, which has twice
    /// its height and width, in one pass over rows on all cores. With `inPlace` the sum is written
    /// over `skip` (inference, where the skip is not needed afterwards: one stream of memory fewer).
    public static func upsampledSum(
        _ coarse: Tensor, _ skip: Tensor, workspace ws: Workspace? = nil, inPlace: Bool = false
    ) throws -> Tensor {
        guard skip.n == coarse.n, skip.c == coarse.c, skip.h == 2 * coarse.h, skip.w == 2 * coarse.w,
            skip.layout == coarse.layout, coarse.layout == .nhwc || coarse.c == 1
        else {
            throw MoireError(.usage, "cannot add \(coarse.shape) upsampled twice to \(skip.shape)")
        }
        let y = inPlace ? skip : ws?.like(skip) ?? skip.like()
        nonisolated(unsafe) let (sum, fine, coarseData) = (y.data, skip.data, coarse.data)
        let (channels, width, height, coarseWidth, coarseHeight) = (skip.c, skip.w, skip.h, coarse.w, coarse.h)
        let vectorsPerPixel = channels % 8 == 0 ? channels / 8 : 0
        parallelRanges(skip.n * height, grain: max(1, 16_384 / (width * channels))) { rows in
            for row in rows {
                let (image, line) = row.quotientAndRemainder(dividingBy: height)
                let coarseLine = coarseData + ((image * coarseHeight + line / 2) * coarseWidth) * channels
                let fineLine = fine + row * width * channels
                let sumLine = sum + row * width * channels
                guard vectorsPerPixel > 0 else {
                    for x in 0..<width {
                        let source = coarseLine + (x / 2) * channels
                        let offset = x * channels
                        for c in 0..<channels { sumLine[offset + c] = fineLine[offset + c] + source[c] }
                    }
                    continue
                }
                // Eight channels at a time; each coarse vector is loaded once for its two fine pixels.
                for coarseX in 0..<coarseWidth {
                    for vector in 0..<vectorsPerPixel {
                        let source = coarseLine + coarseX * channels + 8 * vector
                        let value = UnsafeRawPointer(source).loadUnaligned(as: SIMD8<Float>.self)
                        for pixel in 0..<2 {
                            let offset = (2 * coarseX + pixel) * channels + 8 * vector
                            let fineValue = UnsafeRawPointer(fineLine + offset).loadUnaligned(as: SIMD8<Float>.self)
                            UnsafeMutableRawPointer(sumLine + offset).storeBytes(
                                of: fineValue + value, as: SIMD8<Float>.self)
                        }
                    }
                }
            }
        }
        return y
    }

    /// `x`'s first channel plus the one-channel `r` (a residual output): no copy of the channel first.
    public static func firstChannel(of x: Tensor, plus r: Tensor, workspace ws: Workspace? = nil) throws -> Tensor {
        guard r.c == 1, x.n == r.n, x.h == r.h, x.w == r.w, x.c == 1 || x.layout == .nhwc else {
            throw MoireError(.usage, "cannot add \(r.shape) to the first channel of \(x.shape)")
        }
        let y = ws?.like(r) ?? r.like()
        nonisolated(unsafe) let (sum, input, residual) = (y.data, x.data, r.data)
        let stride = x.c
        parallelRanges(r.count, grain: 32_768) { range in
            for i in range { sum[i] = input[i * stride] + residual[i] }
        }
        return y
    }
}

/// Adam (Kingma & Ba) over a list of parameter/gradient tensor pairs.
// Not Sendable: optimiser moments, updated only by the training thread of its network.
public final class Adam {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float
    /// First and second moment estimates, one tensor per parameter (pointer loops: no exclusivity
    /// checks on nested arrays in the per-step update).
    private let m: [Tensor], v: [Tensor]
    public private(set) var step = 0
    let params: [(Tensor, Tensor)]

    public init(
        parameters: [(Tensor, Tensor)], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
        epsilon: Float = 1e-8
    ) {
        params = parameters
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        m = parameters.map { $0.0.like() }
        v = parameters.map { $0.0.like() }
    }

    /// One update from the accumulated gradients.
    public func update() {
        step += 1
        let c1 = 1 - pow(beta1, Float(step))
        let c2 = 1 - pow(beta2, Float(step))
        for (k, (p, g)) in params.enumerated() {
            let (value, gradient, first, second) = (p.data, g.data, m[k].data, v[k].data)
            // Eight at a time; the last few through a zero-padded vector (the same arithmetic).
            for start in stride(from: 0, to: p.count, by: 8) {
                let lanes = min(8, p.count - start)
                var (w, d, mean, square) = (
                    Self.load(value + start, lanes), Self.load(gradient + start, lanes),
                    Self.load(first + start, lanes), Self.load(second + start, lanes)
                )
                mean = beta1 * mean + (1 - beta1) * d
                square = beta2 * square + (1 - beta2) * d * d
                w -= learningRate * (mean / c1) / ((square / c2).squareRoot() + epsilon)
                Self.store(w, value + start, lanes)
                Self.store(mean, first + start, lanes)
                Self.store(square, second + start, lanes)
            }
        }
    }

    /// `lanes` values from `source` (the rest zero).
    @inline(__always)
    private static func load(_ source: UnsafeMutablePointer<Float>, _ lanes: Int) -> SIMD8<Float> {
        if lanes == 8 { return UnsafeRawPointer(source).loadUnaligned(as: SIMD8<Float>.self) }
        var vector = SIMD8<Float>()
        for lane in 0..<lanes { vector[lane] = source[lane] }
        return vector
    }

    /// The first `lanes` values of `vector` to `target`.
    @inline(__always)
    private static func store(_ vector: SIMD8<Float>, _ target: UnsafeMutablePointer<Float>, _ lanes: Int) {
        if lanes == 8 {
            UnsafeMutableRawPointer(target).storeBytes(of: vector, as: SIMD8<Float>.self)
            return
        }
        for lane in 0..<lanes { target[lane] = vector[lane] }
    }
}
