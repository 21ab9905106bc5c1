import CZMQ
import Foundation
import MoireCore

/// A CURVE public key: 32 bytes, written as 40 Z85 characters (as libzmq, pyzmq and czmq write them).
public struct CurveKey: Sendable, Hashable, CustomStringConvertible {
    /// The 40-character Z85 text.
    public let z85: String

    /// Checks that `z85` is 40 Z85 characters that decode to 32 bytes.
    public init(z85 text: String, place: String? = nil) throws {
        guard text.utf8.count == 40, CurveKey.decode(text) != nil else {
            throw MoireError(.format, "not a CURVE key (40 Z85 characters expected)", place: place)
        }
        z85 = text
    }

    /// Encodes 32 raw bytes (the form a ZAP request carries).
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        var text = [CChar](repeating: 0, count: 41)
        guard zmq_z85_encode(&text, bytes, 32) != nil else { return nil }
        z85 = String(cString: text)
    }

    /// The 32 raw bytes.
    public var bytes: [UInt8] { CurveKey.decode(z85) ?? [] }

    public var description: String { z85 }

    static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 32)
        let ok = text.withCString { zmq_z85_decode(&out, $0) != nil }
        return ok ? out : nil
    }
}

/// A CURVE key pair: the public key one shows, the secret key one keeps.
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: CurveKey
    /// The 40-character Z85 secret key.
    public let secretZ85: String

    /// A fresh key pair from libzmq (libsodium underneath).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        try zmqCall("zmq_curve_keypair", zmq_curve_keypair(&pub, &sec))
        return CurveKeyPair(publicKey: try CurveKey(z85: String(cString: pub)), secretZ85: String(cString: sec))
    }

    public init(publicKey: CurveKey, secretZ85: String) {
        self.publicKey = publicKey
        self.secretZ85 = secretZ85
    }

    /// Derives the public key from the secret one, so a file whose two keys disagree is caught.
    public init(secretZ85 secret: String, place: String? = nil) throws {
        guard secret.utf8.count == 40, CurveKey.decode(secret) != nil else {
            throw MoireError(.format, "not a CURVE secret key (40 Z85 characters expected)", place: place)
        }
        var pub = [CChar](repeating: 0, count: 41)
        try zmqCall("zmq_curve_public", zmq_curve_public(&pub, secret))
        publicKey = try CurveKey(z85: String(cString: pub), place: place)
        secretZ85 = secret
    }
}

/// Key files in the certificate format of czmq and pyzmq's `zmq.auth` (`NAME.key` holds the
/// public key, `NAME.key_secret` both), so keys made by either tool work here and back.
public enum CurveKeyFile {
    /// Where keys live unless told otherwise: `$XDG_CONFIG_HOME/moire/keys`, else `~/.config/moire/keys`.
    public static var defaultDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let config = env["XDG_CONFIG_HOME"], config.hasPrefix("/") { return config + "/moire/keys" }
        return NSHomeDirectory() + "/.config/moire/keys"
    }

    /// Writes `NAME.key` (public, mode 0644) and `NAME.key_secret` (both keys, mode 0600) into `directory`.
    /// Refuses to replace existing files.
    @discardableResult
    public static func write(_ pair: CurveKeyPair, name: String, directory: String) throws -> (
        publicFile: String, secretFile: String
    ) {
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw MoireError(.usage, "key name '\(name)' must be letters, digits, - or _")
        }
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let publicFile = directory + "/" + name + ".key"
        let secretFile = publicFile + "_secret"
        for path in [publicFile, secretFile] where FileManager.default.fileExists(atPath: path) {
            throw MoireError(.io, "exists already; not replaced (remove it first to make a new key)", place: path)
        }
        let stamp = ISO8601DateFormatter().string(from: Date())
        try writeCertificate(
            to: secretFile, mode: 0o600,
            lines: [
                "#   ZeroMQ CURVE **Secret** Certificate, made by Moiré on \(stamp)",
                "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.",
                "", "metadata", "curve", "    public-key = \"\(pair.publicKey.z85)\"",
                "    secret-key = \"\(pair.secretZ85)\"",
            ])
        try writeCertificate(
            to: publicFile, mode: 0o644,
            lines: [
                "#   ZeroMQ CURVE Public Certificate, made by Moiré on \(stamp)",
                "#   Give this file to the peers that must recognise this key.",
                "", "metadata", "curve", "    public-key = \"\(pair.publicKey.z85)\"",
            ])
        return (publicFile, secretFile)
    }

    /// Reads the public key of a certificate (`NAME.key` or `NAME.key_secret`).
    public static func readPublic(_ path: String) throws -> CurveKey {
        let fields = try read(path)
        guard let text = fields["public-key"] else {
            throw MoireError(.format, "no public-key line (a ZeroMQ CURVE certificate expected)", place: path)
        }
        return try CurveKey(z85: text, place: path)
    }

    /// Reads a secret certificate; refuses one that other users can read, as ssh does.
    public static func readSecret(_ path: String) throws -> CurveKeyPair {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw MoireError(.io, "cannot read the secret key: \(String(cString: strerror(errno)))", place: path)
        }
        if info.st_mode & 0o077 != 0 {
            throw MoireError(
                .io,
                "the secret key is readable by others (mode \(String(info.st_mode & 0o777, radix: 8))); chmod 600 it",
                place: path)
        }
        let fields = try read(path)
        guard let secret = fields["secret-key"] else {
            throw MoireError(.format, "no secret-key line (a NAME.key_secret certificate expected)", place: path)
        }
        let pair = try CurveKeyPair(secretZ85: secret, place: path)
        if let shown = fields["public-key"], shown != pair.publicKey.z85 {
            throw MoireError(.format, "the public-key line does not belong to the secret key", place: path)
        }
        return pair
    }

    /// Every public key in `directory` (`*.key` files): an allow-list.
    public static func readAllowList(_ directory: String) throws -> [CurveKey] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw MoireError(.io, "cannot list the authorized keys: \(error.localizedDescription)", place: directory)
        }
        return try names.filter { $0.hasSuffix(".key") }.sorted().map { try readPublic(directory + "/" + $0) }
    }

    private static func read(_ path: String) throws -> [String: String] {
        let size = try InputFile.size(path)
        guard size <= 64 * 1024 else { throw MoireError(.format, "too large for a key certificate", place: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MoireError(.io, "cannot read", place: path)
        }
        var fields: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.hasPrefix("#"), let eq = trimmed.firstIndex(of: "=") else { continue }
            let key = trimmed[..<eq].trimmingCharacters(in: .whitespaces)
            let value = trimmed[trimmed.index(after: eq)...].trimmingCharacters(
                in: CharacterSet(charactersIn: " \t\"'"))
            fields[key] = value
        }
        return fields
    }

    private static func writeCertificate(to path: String, mode: mode_t, lines: [String]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw MoireError(.io, "cannot create: \(String(cString: strerror(errno)))", place: path) }
        defer { close(fd) }
        let text = Array((lines.joined(separator: "\n") + "\n").utf8)
        guard Foundation.write(fd, text, text.count) == text.count else {
            throw MoireError(.io, "cannot write: \(String(cString: strerror(errno)))", place: path)
        }
        fchmod(fd, mode)
    }
}

/// Who may command a daemon on its control endpoint.
public enum ControlAccess: Sendable {
    /// An `ipc://` socket: its user only, plus the members of `group` when given. The socket's
    /// directory must belong to that user and be closed to others; every request's sender is
    /// checked by its kernel credentials as well.
    case localUser(group: gid_t? = nil)
    /// A `tcp://` endpoint with ZeroMQ CURVE: the daemon proves `server`, clients must hold a
    /// secret key whose public half is in `authorizedClients`.
    case curve(server: CurveKeyPair, authorizedClients: [CurveKey])
    /// `inproc://` only: within this process.
    case inProcess
}

/// How a client knows it talks to the daemon it means (`moire run` pins one; it never falls back).
public enum DaemonPin: Sendable, Equatable {
    /// An `ipc://` socket that belongs to this user (uid) in a directory no one else may write.
    case socketOwner(uid_t)
    /// A `tcp://` endpoint whose daemon proves this CURVE key; `client` is our own key pair.
    case curve(server: CurveKey, client: CurveKeyPair)
    /// `inproc://`: this process.
    case inProcess

    /// The pin a plain call uses: the socket's owner must be the calling user.
    public static var currentUser: DaemonPin { .socketOwner(getuid()) }
}

/// Control endpoints: the default place, and the checks on an ipc socket's file.
public enum ControlEndpoint {
    /// `ipc://$XDG_RUNTIME_DIR/moire/control.sock`, else `ipc:///tmp/moire-UID/control.sock`.
    public static var defaultEndpoint: String { "ipc://" + defaultDirectory + "/control.sock" }

    /// The directory of the default socket (private to the user).
    public static var defaultDirectory: String {
        if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/"),
            FileManager.default.fileExists(atPath: runtime)
        {
            return runtime + "/moire"
        }
        return "/tmp/moire-\(getuid())"
    }

    /// The file of an `ipc://` endpoint, or nil for other transports.
    public static func ipcPath(_ endpoint: String) -> String? {
        guard endpoint.hasPrefix("ipc://") else { return nil }
        return String(endpoint.dropFirst(6))
    }

    /// Makes the default directory (mode 0700) when it is missing.
    public static func prepareDefaultDirectory() throws {
        let directory = defaultDirectory
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw MoireError(
                .io, "cannot make the control directory: \(String(cString: strerror(errno)))", place: directory)
        }
    }

    /// Throws unless the directory holding an ipc socket belongs to `owner` and no one else may
    /// write in it (then no one else can put a socket of theirs in its place). With `group`, members
    /// of that group may enter it.
    public static func checkDirectory(of socketPath: String, owner: uid_t, group: gid_t? = nil) throws {
        let directory = (socketPath as NSString).deletingLastPathComponent
        var info = stat()
        guard lstat(directory.isEmpty ? "." : directory, &info) == 0 else {
            throw MoireError(.io, "the socket's directory: \(String(cString: strerror(errno)))", place: directory)
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw MoireError(.permission, "the socket's directory is not a directory (a link?)", place: directory)
        }
        guard info.st_uid == owner else {
            throw MoireError(
                .permission, "the socket's directory belongs to uid \(info.st_uid), not to uid \(owner)",
                place: directory)
        }
        let mode = info.st_mode & 0o777
        let open = group == nil ? mode & 0o077 : mode & 0o027
        guard open == 0 else {
            throw MoireError(
                .permission,
                "the socket's directory is open to others (mode \(String(mode, radix: 8))); "
                    + (group == nil ? "chmod 700 it" : "chmod 750 it"),
                place: directory)
        }
        if let group, info.st_gid != group {
            throw MoireError(
                .permission, "the socket's directory belongs to group \(info.st_gid), not \(group)", place: directory)
        }
    }

    /// Throws unless an ipc socket is what the pin expects: a socket owned by that uid, in a
    /// directory that uid owns and others cannot write.
    public static func checkSocket(_ socketPath: String, owner: uid_t) throws {
        var info = stat()
        guard lstat(socketPath, &info) == 0 else {
            throw MoireError(
                .transport, "no daemon socket here (\(String(cString: strerror(errno))))", place: socketPath)
        }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw MoireError(.permission, "not a socket; refused", place: socketPath)
        }
        guard info.st_uid == owner else {
            throw MoireError(
                .permission,
                "the socket belongs to uid \(info.st_uid), not to uid \(owner): not the daemon you mean; refused",
                place: socketPath)
        }
        var directory = stat()
        let parent = (socketPath as NSString).deletingLastPathComponent
        guard lstat(parent.isEmpty ? "." : parent, &directory) == 0 else {
            throw MoireError(.io, "the socket's directory: \(String(cString: strerror(errno)))", place: parent)
        }
        guard directory.st_uid == owner || directory.st_uid == 0, directory.st_mode & 0o022 == 0 else {
            throw MoireError(
                .permission,
                "the socket's directory can be written by others (mode \(String(directory.st_mode & 0o777, radix: 8)), uid \(directory.st_uid)): anyone could have put this socket there; refused",
                place: parent)
        }
    }
}

/// The kernel credentials of a request's sender on an ipc socket (libzmq's `Peer-Address`
/// property there is `…:uid:gid:pid`, from SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public var uid: uid_t
    public var gid: gid_t
    public var pid: pid_t

    init?(peerAddress: String) {
        let fields = peerAddress.split(separator: ":", omittingEmptySubsequences: false).suffix(3)
        guard fields.count == 3, let u = UInt32(fields[fields.startIndex]),
            let g = UInt32(fields[fields.startIndex + 1]), let p = Int32(fields[fields.startIndex + 2])
        else { return nil }
        uid = u
        gid = g
        pid = p
    }

    /// True when this sender is `owner`, or a member of `group`.
    func allowed(owner: uid_t, group: gid_t?) -> Bool {
        if uid == owner { return true }
        guard let group else { return false }
        if gid == group { return true }
        return PeerCredentials.groups(of: uid).contains(group)
    }

    private static func groups(of uid: uid_t) -> [gid_t] {
        guard let entry = getpwuid(uid) else { return [] }
        let primary = entry.pointee.pw_gid
        var count: Int32 = 64
        var list = [gid_t](repeating: 0, count: Int(count))
        guard getgrouplist(entry.pointee.pw_name, primary, &list, &count) >= 0 else { return [primary] }
        return Array(list.prefix(Int(count)))
    }
}

/// The ZeroMQ authentication handler (ZAP, RFC 27) of the shared context: accepts a CURVE client
/// only when its public key is in the allow-list of the domain its server names. One per process;
/// each CURVE server registers a domain of its own.
// Sendable by hand: `domains` guarded by `lock`; the REP socket is used by the handler thread only.
public final class CurveAuthenticator: @unchecked Sendable {
    /// The process's authenticator, on `ZMQContext.shared`.
    public static let shared = CurveAuthenticator()

    /// What one server accepts, and whom it tells about refusals.
    private struct Domain {
        var allowed: Set<[UInt8]>
        var refused: Int
        var onRefusal: @Sendable (String) -> Void
    }

    private let lock = NSLock()
    private var domains: [String: Domain] = [:]
    private var started = false
    private var nextDomain = 0

    /// Registers a server's allow-list; returns the ZAP domain the server socket must name.
    public func register(authorizedClients: [CurveKey], onRefusal: @escaping @Sendable (String) -> Void) throws
        -> String
    {
        try startIfNeeded()
        lock.lock()
        defer { lock.unlock() }
        nextDomain += 1
        let name = "moire-\(nextDomain)"
        domains[name] = Domain(allowed: Set(authorizedClients.map(\.bytes)), refused: 0, onRefusal: onRefusal)
        return name
    }

    /// Forgets a server's domain (its clients are refused from then on).
    public func unregister(_ domain: String) {
        lock.lock()
        domains[domain] = nil
        lock.unlock()
    }

    /// How many clients were refused on `domain`.
    public func refused(_ domain: String) -> Int {
        lock.lock()
        defer { lock.unlock() }
        return domains[domain]?.refused ?? 0
    }

    private func startIfNeeded() throws {
        lock.lock()
        defer { lock.unlock() }
        if started { return }
        let ready = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        let t = Thread { [self] in
            do {
                let socket = try ZMQSocket(.shared, type: .rep)
                try socket.bind("inproc://zeromq.zap.01")
                ready.signal()
                serve(socket)
            } catch {
                failure.error = error
                ready.signal()
            }
        }
        t.name = "moire.zap"
        t.start()
        ready.wait()
        if let error = failure.error {
            throw MoireError(.transport, "cannot start the CURVE authenticator: \(error)")
        }
        started = true
    }

    /// Answers ZAP requests for the life of the process.
    private func serve(_ socket: borrowing ZMQSocket) {
        while true {
            guard let parts = try? socket.receive() else {
                if moire_zmq_errno() == ETERM { return }
                continue
            }
            // version, request id, domain, address, routing id, mechanism, credentials...
            guard parts.count >= 6 else { continue }
            let requestID = parts[1].data
            let domainName = parts[2].string
            let address = parts[3].string
            let mechanism = parts[5].string
            let offersCurveKey = mechanism == "CURVE" && parts.count >= 7 && parts[6].count == 32
            let key: [UInt8]? = offersCurveKey ? [UInt8](parts[6].data) : nil
            lock.lock()
            let domain = domains[domainName]
            let accepted = key.map { domain?.allowed.contains($0) == true } ?? false
            if !accepted { domains[domainName]?.refused += 1 }
            lock.unlock()
            if !accepted {
                let who = key.flatMap { CurveKey(bytes: $0)?.z85 } ?? "a client without a CURVE key (\(mechanism))"
                domain?.onRefusal("\(who) from \(address)")
            }
            let user = accepted ? key.flatMap { CurveKey(bytes: $0)?.z85 } ?? "" : ""
            try? socket.send([
                .text("1.0"), .bytes(requestID), .text(accepted ? "200" : "400"),
                .text(accepted ? "OK" : "key not authorized"), .text(user), .bytes(Data()),
            ])
        }
    }
}

/// An error handed from a starting thread to the one waiting for it.
// Sendable by hand: written once by the starting thread before it signals the semaphore the reader waits on.
private final class FailureBox: @unchecked Sendable {
    var error: Error?
}
