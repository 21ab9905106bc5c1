import CZMQ
import Foundation
import MoireCore

/// A control request to the daemon (JSON over REQ/REP).
public struct ControlRequest: Codable, Sendable, Equatable {
    /// `start`, `stop`, `status`, `ping`.
    public var cmd: String
    public var protocolFile: String?
    public var out: String?
    /// Runs the protocol on this rig instead of the one it names.
    public var rig: String?
    /// Replace an existing recording at the output path (absent: refuse).
    public var overwrite: Bool?
    public init(
        cmd: String, protocolFile: String? = nil, out: String? = nil, rig: String? = nil, overwrite: Bool? = nil
    ) {
        self.cmd = cmd; self.protocolFile = protocolFile; self.out = out; self.rig = rig; self.overwrite = overwrite
    }
}

/// Who a daemon is: what `ping` answers, so a client can say which daemon runs its protocol.
public struct DaemonInfo: Codable, Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var user: String
    /// The directory every recording of this daemon goes under.
    public var dataRoot: String?
    public init(pid: Int32, uid: UInt32, user: String, dataRoot: String?) {
        self.pid = pid; self.uid = uid; self.user = user; self.dataRoot = dataRoot
    }

    /// This process.
    public static func current(dataRoot: String?) -> DaemonInfo {
        let uid = geteuid()
        let name = getpwuid(uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(uid)"
        return DaemonInfo(pid: getpid(), uid: uid, user: name, dataRoot: dataRoot)
    }

    public var summary: String { "moired pid \(pid), user \(user)" }
}

/// The daemon's answer.
public struct ControlReply: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    /// Runner state: idle, arming, acquiring, paused, stopping, finishing, faulted.
    public var state: String?
    public var run: String?
    public var frames: Int?
    public var missing: Int?
    public var planned: Int?
    public var recording: String?
    public var publish: String?
    /// Messages the run put on its result bus so far (a subscriber that missed `stop` compares its count).
    public var published: Int?
    /// The last `seq` the run published on each result-bus topic (`raw.gfp`: 179, `sr.gfp`: 19).
    public var lastSeq: [String: Int]?
    /// The daemon's identity (`ping`, `status`).
    public var daemon: DaemonInfo?
    public init(
        ok: Bool, error: String? = nil, state: String? = nil, run: String? = nil, frames: Int? = nil,
        missing: Int? = nil, planned: Int? = nil, recording: String? = nil, publish: String? = nil,
        published: Int? = nil, lastSeq: [String: Int]? = nil, daemon: DaemonInfo? = nil
    ) {
        self.ok = ok; self.error = error; self.state = state; self.run = run; self.frames = frames
        self.missing = missing; self.planned = planned; self.recording = recording; self.publish = publish
        self.published = published; self.lastSeq = lastSeq; self.daemon = daemon
    }
}

/// Serves control requests on a REP socket until `stop()`; one request at a time.
///
/// Only those `access` names may command: an ipc socket is closed to other users (its directory,
/// its mode, and each sender's kernel credentials); a tcp endpoint needs CURVE with an allow-list.
// Sendable by hand: mutable state guarded by `stopFlag` (NSLock); the socket is used by the serving thread.
public final class ControlServer: @unchecked Sendable {
    private let socket: ZMQSocket
    public let endpoint: String
    public let access: ControlAccess
    private let owner = geteuid()
    private let zapDomain: String?
    private let stopFlag = NSLock()
    private var stopped = false
    private var refusedSenders = 0
    private let onRefusal: @Sendable (String) -> Void

    /// Binds `endpoint`: `ipc://` with `.localUser`, `tcp://` with `.curve`, `inproc://` with anything.
    public init(
        context: ZMQContext = .shared, endpoint: String, access: ControlAccess = .localUser(),
        onRefusal: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        self.access = access
        let socket = try ZMQSocket(context, type: .rep)
        var domain: String?
        if let path = ControlEndpoint.ipcPath(endpoint) {
            guard case .localUser(let group) = access else {
                throw MoireError(
                    .usage, "an ipc control socket is guarded by its user (CURVE is for tcp)", place: endpoint)
            }
            try ControlEndpoint.checkDirectory(of: path, owner: geteuid(), group: group)
            try ControlServer.refuseToTakeOver(path, endpoint: endpoint)
        } else if endpoint.hasPrefix("tcp://") {
            guard case .curve(let server, let clients) = access else {
                throw MoireError(
                    .permission,
                    "control over tcp needs CURVE keys (moired --server-key, --authorized-keys); "
                        + "a local daemon listens on an ipc socket instead",
                    place: endpoint)
            }
            guard context === ZMQContext.shared else {
                throw MoireError(.usage, "a CURVE control server uses the shared context (its authenticator is there)")
            }
            let zap = try CurveAuthenticator.shared.register(authorizedClients: clients, onRefusal: onRefusal)
            domain = zap
            try socket.setOption(ZMQ_CURVE_SERVER, 1)
            try socket.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(server.secretZ85.utf8))
            try socket.setOption(ZMQ_ZAP_DOMAIN, bytes: Array(zap.utf8))
        } else if !endpoint.hasPrefix("inproc://") {
            throw MoireError(
                .usage, "a control endpoint is ipc://PATH, tcp://HOST:PORT or inproc://NAME", place: endpoint)
        }
        zapDomain = domain
        do { try socket.bind(endpoint) } catch let e as ZMQError {
            domain.map(CurveAuthenticator.shared.unregister)
            throw MoireError(.transport, "cannot bind the control endpoint: \(e)", place: endpoint)
        }
        if let path = ControlEndpoint.ipcPath(endpoint), case .localUser(let group) = access {
            if let group { chown(path, uid_t.max, group) }
            chmod(path, group == nil ? 0o600 : 0o660)
        }
        self.endpoint = try socket.lastEndpoint()
        self.socket = socket
        self.onRefusal = onRefusal
    }

    deinit { zapDomain.map(CurveAuthenticator.shared.unregister) }

    public func stop() { stopFlag.lock(); stopped = true; stopFlag.unlock() }
    private var isStopped: Bool { stopFlag.lock(); defer { stopFlag.unlock() }; return stopped }

    /// Requests refused so far: senders of other users on ipc, unauthorized keys on tcp.
    public var refused: Int {
        stopFlag.lock()
        let local = refusedSenders
        stopFlag.unlock()
        return local + (zapDomain.map(CurveAuthenticator.shared.refused) ?? 0)
    }

    /// Runs the request loop on the calling thread. Malformed requests get an error reply; a sender
    /// that may not command gets a refusal and nothing else.
    public func serve(_ handler: (ControlRequest) -> ControlReply) {
        while !isStopped {
            guard (try? socket.poll(timeoutMs: 100)) == true, let parts = try? socket.receive() else { continue }
            let reply: ControlReply
            if let refusal = refusal(of: parts.first) {
                stopFlag.lock(); refusedSenders += 1; stopFlag.unlock()
                onRefusal(refusal)
                reply = ControlReply(ok: false, error: "refused: \(refusal)")
            } else if parts.count == 1, parts[0].count <= ControlServer.maximumRequestBytes,
                let req = try? JSONDecoder().decode(ControlRequest.self, from: parts[0].data)
            {
                reply = handler(req)
            } else {
                reply = ControlReply(
                    ok: false, error: "malformed request: expected JSON {\"cmd\": \"start|stop|status|ping\", ...}")
            }
            let json = (try? Wire.encode(reply)) ?? Data("{\"ok\":false}".utf8)
            try? socket.send([.bytes(json)])
        }
    }

    /// The longest request read (paths and a command; a protocol travels by path, not by value).
    public static let maximumRequestBytes = 64 * 1024

    /// Why the sender of `message` may not command, or nil.
    private func refusal(of message: ZMQMessage?) -> String? {
        guard case .localUser(let group) = access, ControlEndpoint.ipcPath(endpoint) != nil else { return nil }
        guard let address = message?.property("Peer-Address"), let peer = PeerCredentials(peerAddress: address) else {
            return "the sender's credentials are unknown"
        }
        if peer.allowed(owner: owner, group: group) { return nil }
        return "uid \(peer.uid) (pid \(peer.pid)) may not command this daemon"
    }

    /// libzmq replaces whatever is at an ipc path; refuse when it is not a socket, or when a daemon answers there.
    private static func refuseToTakeOver(_ path: String, endpoint: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw MoireError(.io, "something that is not a socket is there; not replaced", place: path)
        }
        if (try? ControlClient.call(endpoint, ControlRequest(cmd: "ping"), timeoutMs: 300, pin: .inProcess)) != nil {
            throw MoireError(.transport, "a daemon already listens there", place: endpoint)
        }
    }
}

/// A client of the control endpoint.
public enum ControlClient {
    /// Sends one request; nil when nobody answers within `timeoutMs` (no daemon running).
    ///
    /// Throws when the endpoint is not the daemon `pin` names: an ipc socket of another user or in a
    /// directory others can write; a tcp daemon that cannot prove the pinned key (CURVE) or that
    /// refuses our key.
    public static func call(
        _ endpoint: String, _ request: ControlRequest, timeoutMs: Int32 = 2000,
        pin: DaemonPin = .currentUser, context: ZMQContext = .shared
    ) throws -> ControlReply? {
        let s = try ZMQSocket(context, type: .req)
        try s.setReceiveTimeout(ms: timeoutMs)
        try s.setSendTimeout(ms: timeoutMs)
        switch pin {
        case .socketOwner(let uid):
            guard let path = ControlEndpoint.ipcPath(endpoint) else {
                throw MoireError(
                    .permission,
                    "a daemon is pinned by its ipc socket's owner or by its CURVE key (--daemon-key) for tcp",
                    place: endpoint)
            }
            try ControlEndpoint.checkSocket(path, owner: uid)
        case .curve(let server, let client):
            guard endpoint.hasPrefix("tcp://") else {
                throw MoireError(.usage, "a CURVE key pins a tcp:// daemon", place: endpoint)
            }
            try s.setOption(ZMQ_CURVE_SERVERKEY, bytes: Array(server.z85.utf8))
            try s.setOption(ZMQ_CURVE_PUBLICKEY, bytes: Array(client.publicKey.z85.utf8))
            try s.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(client.secretZ85.utf8))
        case .inProcess:
            break
        }
        let monitor = try HandshakeMonitor(watching: s, context: context)
        try s.connect(endpoint)
        try s.send([.bytes(Wire.encode(request))])
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while true {
            let left = Int(deadline.timeIntervalSinceNow * 1000)
            if left <= 0 { return nil }
            if try s.poll(timeoutMs: min(left, 50)) { break }
            if let failure = monitor.failure() {
                throw MoireError(.permission, failure, place: endpoint)
            }
        }
        let parts = try s.receive()
        let reply: ControlReply
        do { reply = try JSONDecoder().decode(ControlReply.self, from: parts.first?.data ?? Data()) } catch {
            throw MoireError(.format, "malformed control reply: \(Wire.describe(error))", place: endpoint)
        }
        return reply
    }
}

/// Watches a socket's handshakes: a CURVE peer that fails to prove its key, or refuses ours, shows
/// up here instead of as silence.
private struct HandshakeMonitor: ~Copyable {
    private let events: ZMQSocket
    private static let counter = Counter()

    init(watching socket: borrowing ZMQSocket, context: ZMQContext) throws {
        let address = "inproc://moire-handshake-\(HandshakeMonitor.counter.next())"
        let wanted =
            ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        try socket.monitor(address, events: Int32(wanted))
        let pair = try ZMQSocket(context, type: .pair)
        try pair.connect(address)
        events = pair
    }

    /// A sentence for a failed handshake, or nil.
    func failure() -> String? {
        while let parts = try? events.receive(dontWait: true) {
            guard let first = parts.first, first.count >= 6 else { continue }
            let event = Int32(first.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) })
            switch event {
            case Int32(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH):
                return "the daemon refused our key (it is not in the daemon's authorized keys)"
            case Int32(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL), Int32(ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                return
                    "the peer could not prove the pinned daemon key (a different daemon, or not a CURVE daemon); refused"
            default: continue
            }
        }
        return nil
    }

    // Sendable by hand: `value` guarded by `lock`.
    private final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
    }
}
