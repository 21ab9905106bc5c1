/// The rules every endpoint Moiré binds obeys, shared by `validate`, `run` and the daemon.
public enum EndpointRule {
    /// Why `endpoint` may not be bound as a result bus, or nil when it may: `ipc://PATH`,
    /// `inproc://NAME`, or `tcp://` on a loopback address with a port (or `*` for any free port).
    /// Anything else (all interfaces, a network address, an interface name) would publish beyond
    /// this machine, which needs CURVE keys.
    public static func bindProblem(_ endpoint: String) -> String? {
        if endpoint.hasPrefix("ipc://") {
            return endpoint.count > 6 ? nil : "an ipc endpoint needs a path (ipc:///run/moire/bus.sock)"
        }
        if endpoint.hasPrefix("inproc://") { return endpoint.count > 9 ? nil : "an inproc endpoint needs a name" }
        guard endpoint.hasPrefix("tcp://") else { return "an endpoint starts with tcp://, ipc:// or inproc://" }
        let address = endpoint.dropFirst(6)
        guard let colon = address.lastIndex(of: ":") else {
            return "a tcp endpoint needs a port (tcp://127.0.0.1:5560, or :* for any free port)"
        }
        let host = String(address[..<colon])
        let port = address[address.index(after: colon)...]
        guard port == "*" || (UInt16(port).map { $0 > 0 } ?? false) else {
            return "'\(port)' is not a port (1–65535, or * for any free port)"
        }
        let loopback = ["127.0.0.1", "localhost", "[::1]", "::1"]
        guard loopback.contains(host) || (host.hasPrefix("127.") && host.split(separator: ".").count == 4) else {
            return
                "'\(host)' is not a loopback address: binding it would publish beyond this machine, which needs CURVE keys (use 127.0.0.1 or an ipc:// path)"
        }
        return nil
    }
}
