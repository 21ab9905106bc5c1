import CDNNL
import MoireCore

/// The one funnel for oneDNN calls: a non-success status becomes a typed error.
func dnnlCall(_ what: @autoclosure () -> String, _ status: dnnl_status_t) throws {
    guard status == dnnl_success else {
        throw MoireError(.numeric, "\(what()) failed with oneDNN status \(status.rawValue)")
    }
}

/// A oneDNN CPU engine and stream (shared handle). The denoiser's layers run on it.
// Not Sendable: the oneDNN engine and stream, immutable after init; each network runs on one thread at a time.
public final class DNNLEngine {
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t

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

    /// Creates a primitive descriptor and primitive from an operation descriptor.
    func primitive(_ what: String, _ desc: UnsafeRawPointer, hint: dnnl_primitive_desc_t? = nil) throws -> (
        dnnl_primitive_desc_t?, dnnl_primitive_t?
    ) {
        var pd: dnnl_primitive_desc_t?
        try dnnlCall("\(what) descriptor", dnnl_primitive_desc_create(&pd, desc, nil, engine, hint))
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
        try dnnlCall("dnnl_primitive_execute", dnnl_primitive_execute(prim, stream, Int32(exec.count), exec))
        try dnnlCall("dnnl_stream_wait", dnnl_stream_wait(stream))
    }

    /// A reorder primitive between two layouts of the same data.
    func reorder(from src: dnnl_memory_desc_t, to dst: dnnl_memory_desc_t) throws -> (
        dnnl_primitive_desc_t?, dnnl_primitive_t?
    ) {
        var s = src
        var d = dst
        var pd: dnnl_primitive_desc_t?
        try dnnlCall("reorder descriptor", dnnl_reorder_primitive_desc_create(&pd, &s, engine, &d, engine, nil))
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
