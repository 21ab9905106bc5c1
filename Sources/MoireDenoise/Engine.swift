import CDNNL
import MoireCore

/// The one funnel for oneDNN calls: a non-success status becomes a typed error.
func dnnlCall(_ what: @autoclosure () -> String, _ status: dnnl_status_t) throws {
    guard status == dnnl_success else {
        throw MoireError(.numeric, "\(what()) failed with oneDNN status \(status.rawValue)")
    }
}

/// A oneDNN CPU engine and stream (shared handle). The denoiser's layers run on it.
public final class DNNLEngine: @unchecked Sendable {
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

    /// oneDNN's version string (major.minor.patch).
    public static var version: String {
        let v = dnnl_version()!.pointee
        return "\(v.major).\(v.minor).\(v.patch)"
    }
}
