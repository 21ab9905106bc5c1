import CDNNL
import MoireCore

/// The one funnel for oneDNN calls: a non-success status becomes a typed error.
func dnnlCall(_ what: @autoclosure () -> String, _ status: dnnl_status_t) throws {
    guard status == dnnl_success else {
        throw MoireError(.numeric, "\(what()) failed with oneDNN status \(status.rawValue)")
    }
}

/// A oneDNN CPU engine and stream (shared handle). The denoiser's layers run on it.
///
/// Every primitive made here takes its scratch memory from the engine (oneDNN's user scratchpad
/// mode): one buffer, grown to the largest need and kept, instead of a fresh allocation (and its
/// page faults) at every execution.
// Not Sendable: the oneDNN engine and stream, immutable after init, and the scratchpad; each network (and its engine) runs on one thread at a time.
public final class DNNLEngine {
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t
    private var scratchpad: UnsafeMutableRawPointer?
    private var scratchpadBytes = 0

    public init() throws {
        var e: dnnl_engine_t?
        try dnnlCall("dnnl_engine_create", dnnl_engine_create(&e, dnnl_cpu, 0))
        var s: dnnl_stream_t?
        let st = dnnl_stream_create(&s, e, dnnl_stream_default_flags.rawValue)
        if st != dnnl_success { dnnl_engine_destroy(e); try dnnlCall("dnnl_stream_create", st) }
        engine = e!
        stream = s!
    }

    deinit {
        scratchpad?.deallocate()
        dnnl_stream_destroy(stream)
        dnnl_engine_destroy(engine)
    }

    /// A plain-layout float32 memory descriptor.
    func md(_ dims: [Int], _ tag: dnnl_format_tag_t) throws -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        let dd = dims.map(Int64.init)
        try dnnlCall(
            "dnnl_memory_desc_init_by_tag", dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dd, dnnl_f32, tag))
        return d
    }

    /// The memory descriptor of a tensor in its own layout.
    func md(_ t: Tensor) throws -> dnnl_memory_desc_t { try md(t.shape, t.layout == .nchw ? dnnl_nchw : dnnl_nhwc) }

    /// Primitive attributes with the user scratchpad mode (the engine's buffer) and, when given, a
    /// LeakyReLU post-op of negative slope `leakyReLUSlope`. The caller destroys them.
    func attributes(leakyReLUSlope: Float? = nil) throws -> dnnl_primitive_attr_t? {
        var attributes: dnnl_primitive_attr_t?
        try dnnlCall("primitive attributes", dnnl_primitive_attr_create(&attributes))
        do {
            try dnnlCall(
                "user scratchpad", dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user))
            if let slope = leakyReLUSlope {
                var postOps: dnnl_post_ops_t?
                try dnnlCall("post-ops", dnnl_post_ops_create(&postOps))
                defer { dnnl_post_ops_destroy(postOps) }
                try dnnlCall(
                    "LeakyReLU post-op", dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, slope, 0))
                try dnnlCall("post-ops attribute", dnnl_primitive_attr_set_post_ops(attributes, postOps))
            }
        } catch {
            dnnl_primitive_attr_destroy(attributes)
            throw error
        }
        return attributes
    }

    /// A primitive descriptor for an operation descriptor, made with `attributes(leakyReLUSlope:)`
    /// (the engine's scratchpad; the fused LeakyReLU when a slope is given).
    func primitiveDescriptor(
        _ what: String, _ desc: UnsafeRawPointer, hint: dnnl_primitive_desc_t? = nil,
        leakyReLUSlope: Float? = nil
    ) throws -> dnnl_primitive_desc_t? {
        let attributes = try self.attributes(leakyReLUSlope: leakyReLUSlope)
        defer { dnnl_primitive_attr_destroy(attributes) }
        var pd: dnnl_primitive_desc_t?
        try dnnlCall("\(what) descriptor", dnnl_primitive_desc_create(&pd, desc, attributes, engine, hint))
        return pd
    }

    /// Creates a primitive descriptor and primitive from an operation descriptor.
    func primitive(_ what: String, _ desc: UnsafeRawPointer, hint: dnnl_primitive_desc_t? = nil) throws -> (
        dnnl_primitive_desc_t?, dnnl_primitive_t?
    ) {
        let pd = try primitiveDescriptor(what, desc, hint: hint)
        var prim: dnnl_primitive_t?
        let st = dnnl_primitive_create(&prim, pd)
        if st != dnnl_success { dnnl_primitive_desc_destroy(pd); try dnnlCall(what, st) }
        return (pd, prim)
    }

    /// Runs a primitive on (argument, memory descriptor, buffer) triples and waits for it.
    func run(_ prim: dnnl_primitive_t?, _ args: [(Int32, dnnl_memory_desc_t, UnsafeMutablePointer<Float>)]) throws {
        var mems: [dnnl_memory_t?] = []
        defer { for m in mems { if let m { dnnl_memory_destroy(m) } } }
        var exec: [dnnl_exec_arg_t] = []
        for (arg, desc, ptr) in args {
            var d = desc
            var m: dnnl_memory_t?
            try dnnlCall("dnnl_memory_create", dnnl_memory_create(&m, &d, engine, ptr))
            mems.append(m)
            exec.append(dnnl_exec_arg_t(arg: arg, memory: m))
        }
        if var scratch = try scratchpadDescriptor(of: prim) {
            var m: dnnl_memory_t?
            try dnnlCall("dnnl_memory_create", dnnl_memory_create(&m, &scratch, engine, scratchpadBuffer(&scratch)))
            mems.append(m)
            exec.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: m))
        }
        try dnnlCall("dnnl_primitive_execute", dnnl_primitive_execute(prim, stream, Int32(exec.count), exec))
        try dnnlCall("dnnl_stream_wait", dnnl_stream_wait(stream))
    }

    /// The scratch memory `prim` asks for (nil: none).
    private func scratchpadDescriptor(of prim: dnnl_primitive_t?) throws -> dnnl_memory_desc_t? {
        var pd: const_dnnl_primitive_desc_t?
        try dnnlCall("primitive descriptor", dnnl_primitive_get_primitive_desc(prim, &pd))
        guard let md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) else { return nil }
        var scratch = md.pointee
        return dnnl_memory_desc_get_size(&scratch) > 0 ? scratch : nil
    }

    /// The engine's scratchpad, grown to hold `desc`.
    private func scratchpadBuffer(_ desc: inout dnnl_memory_desc_t) -> UnsafeMutableRawPointer {
        let bytes = dnnl_memory_desc_get_size(&desc)
        if let scratchpad, scratchpadBytes >= bytes { return scratchpad }
        scratchpad?.deallocate()
        let grown = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        scratchpad = grown
        scratchpadBytes = bytes
        return grown
    }

    /// A reorder primitive between two layouts of the same data.
    func reorder(from src: dnnl_memory_desc_t, to dst: dnnl_memory_desc_t) throws -> (
        dnnl_primitive_desc_t?, dnnl_primitive_t?
    ) {
        var s = src
        var d = dst
        var pd: dnnl_primitive_desc_t?
        let attributes = try self.attributes()
        defer { dnnl_primitive_attr_destroy(attributes) }
        try dnnlCall(
            "reorder descriptor", dnnl_reorder_primitive_desc_create(&pd, &s, engine, &d, engine, attributes))
        var prim: dnnl_primitive_t?
        let st = dnnl_primitive_create(&prim, pd)
        if st != dnnl_success { dnnl_primitive_desc_destroy(pd); try dnnlCall("reorder", st) }
        return (pd, prim)
    }

    /// oneDNN's version string (major.minor.patch).
    public static var version: String {
        let v = dnnl_version()!.pointee
        return "\(v.major).\(v.minor).\(v.patch)"
    }
}
