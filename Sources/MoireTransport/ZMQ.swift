import CZMQ
import Foundation
import MoireCore

/// The one funnel for libzmq calls: checks the result, reads errno at once, throws a typed error.
@discardableResult
func zmqCall(_ what: @autoclosure () -> String, _ rc: Int32) throws -> Int32 {
    if rc >= 0 { return rc }
    let code = moire_zmq_errno()
    throw ZMQError(code: code, operation: what())
}

/// A libzmq failure with its errno.
public struct ZMQError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let operation: String
    public var description: String { "\(operation): \(String(cString: zmq_strerror(code))) (errno \(code))" }
    public var isTimeout: Bool { code == EAGAIN }
    public var isTerminated: Bool { code == ETERM }
    public var moireError: MoireError { MoireError(.transport, description) }
}

/// A ZeroMQ context, shared by every socket of a process (one per pipeline is fine).
// Sendable by hand: libzmq contexts are thread-safe.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    private let termination = NSLock()
    private var terminated = false

    public init(ioThreads: Int = 1) {
        handle = zmq_ctx_new()
        _ = zmq_ctx_set(handle, ZMQ_IO_THREADS, Int32(ioThreads))
    }

    deinit { terminate() }

    /// Ends the context: blocks until every socket made from it is closed and each closed socket's
    /// queued messages went out or its linger ran out. Only the first call does anything.
    public func terminate() {
        termination.lock()
        defer { termination.unlock() }
        guard !terminated else { return }
        terminated = true
        zmq_ctx_term(handle)
    }

    /// Makes blocking calls on every socket of this context fail with ETERM (for shutdown).
    public func shutdown() { zmq_ctx_shutdown(handle) }

    /// The context shared by everything in this process.
    public static let shared = ZMQContext()
}

/// ZeroMQ socket types Moiré uses.
public enum ZMQSocketType: Int32, Sendable {
    case pub = 1, sub = 2, req = 3, rep = 4, xpub = 9, xsub = 10, push = 8, pull = 7, pair = 0, stream = 11
    case dealer = 5, router = 6
}

/// A received message part. Keeps the libzmq message (and so a zero-copy frame's buffer) alive.
// Sendable by hand: one received message, owned by the one thread that received it.
public final class ZMQMessage: @unchecked Sendable {
    let msg: UnsafeMutablePointer<zmq_msg_t>

    init() {
        msg = .allocate(capacity: 1)
        zmq_msg_init(msg)
    }

    deinit {
        zmq_msg_close(msg)
        msg.deallocate()
    }

    public var count: Int { zmq_msg_size(msg) }

    /// The message's bytes, valid only inside `body`: the message (and a zero-copy frame's
    /// buffer) is kept alive until `body` returns. There is no pointer-returning property on
    /// purpose: an optimized build may release the message right after such a property is read.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) {
            try body(UnsafeRawBufferPointer(start: zmq_msg_data(msg), count: count))
        }
    }

    public var data: Data { withUnsafeBytes { Data($0) } }

    /// The bytes as Data without copying them: the Data keeps this message (and its buffer)
    /// alive until the last copy of it is gone. For large parts that are kept or handed on.
    public var sharedData: Data {
        let start = zmq_msg_data(msg)
        guard let start, count > 0 else { return Data() }
        return Data(bytesNoCopy: start, count: count, deallocator: .custom { _, _ in withExtendedLifetime(self) {} })
    }
    public var string: String { withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
    /// The first byte, nil for an empty message.
    public var firstByte: UInt8? { withUnsafeBytes { $0.first } }

    /// A metadata property of the connection it came on (`Peer-Address`, `User-Id`, …).
    public func property(_ name: String) -> String? {
        withExtendedLifetime(self) {
            guard let value = zmq_msg_gets(msg, name) else { return nil }
            return String(cString: value)
        }
    }
}

/// What a socket send takes as one part.
public enum ZMQPart {
    case bytes(Data)
    case text(String)
    /// A buffer owned elsewhere, sent without copying; `release` runs when libzmq is done with it.
    case zeroCopy(UnsafeRawPointer, Int, release: @Sendable () -> Void)
    /// Bytes sent without copying them (from 64 KiB; smaller ones are copied): the part keeps
    /// this Data (and so its heap storage, which nothing can mutate while this copy holds it)
    /// alive until libzmq has sent it.
    case shared(Data)
}

private final class ReleaseBox {
    let release: @Sendable () -> Void
    init(_ r: @escaping @Sendable () -> Void) { release = r }
}

/// Below this size a `.shared` part is copied: small Data has no heap storage of its own, and
/// copying a few kilobytes costs less than the zero-copy bookkeeping.
private let sharedThreshold = 64 * 1024

private final class DataBox {
    let data: Data
    init(_ data: Data) { self.data = data }
}

private let dataFree: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in
    guard let hint else { return }
    Unmanaged<DataBox>.fromOpaque(hint).release()
}

private let zeroCopyFree: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in
    guard let hint else { return }
    Unmanaged<ReleaseBox>.fromOpaque(hint).takeRetainedValue().release()
}

/// One ZeroMQ socket; owned by one thread at a time, closed when dropped.
// Sendable by hand: non-copyable; a socket is used by the one thread that owns it, as libzmq requires.
public struct ZMQSocket: ~Copyable, @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    public let type: ZMQSocketType
    /// Held so that the context outlives the socket: `zmq_ctx_term` blocks until every socket of
    /// the context is closed, and an optimizing compiler may release a context as soon as its
    /// last use, before the sockets made from it.
    private let context: ZMQContext

    public init(_ context: ZMQContext = .shared, type: ZMQSocketType) throws {
        guard let h = zmq_socket(context.handle, type.rawValue) else {
            throw ZMQError(code: moire_zmq_errno(), operation: "zmq_socket")
        }
        handle = h
        self.type = type
        self.context = context
        _ = moire_zmq_setsockopt_int(h, ZMQ_LINGER, 0)
    }

    deinit { zmq_close(handle) }

    public func bind(_ endpoint: String) throws { try zmqCall("bind \(endpoint)", zmq_bind(handle, endpoint)) }
    public func connect(_ endpoint: String) throws { try zmqCall("connect \(endpoint)", zmq_connect(handle, endpoint)) }

    /// The endpoint actually bound (resolves `tcp://127.0.0.1:*`).
    public func lastEndpoint() throws -> String {
        var buf = [CChar](repeating: 0, count: 512)
        var size = buf.count
        try zmqCall("getsockopt LAST_ENDPOINT", zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buf, &size))
        return String(cString: buf)
    }

    public func setOption(_ option: Int32, _ value: Int32) throws {
        try zmqCall("setsockopt \(option)", moire_zmq_setsockopt_int(handle, option, value))
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        try zmqCall(
            "setsockopt \(option)", bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) })
    }

    /// Publishes this socket's `events` (ZMQ_EVENT_* bits) on a PAIR endpoint at `address`.
    public func monitor(_ address: String, events: Int32) throws {
        try zmqCall("zmq_socket_monitor \(address)", zmq_socket_monitor(handle, address, events))
    }

    public func subscribe(_ prefix: String) throws { try setOption(ZMQ_SUBSCRIBE, bytes: Array(prefix.utf8)) }
    public func unsubscribe(_ prefix: String) throws { try setOption(ZMQ_UNSUBSCRIBE, bytes: Array(prefix.utf8)) }

    /// The receive queue's length in messages (0: unbounded), and the kernel's receive buffer in bytes.
    public func limitReceiving(messages: Int32, kernelBytes: Int32) throws {
        try setOption(ZMQ_RCVHWM, messages)
        try setOption(ZMQ_RCVBUF, kernelBytes)
    }

    /// Receive timeout in ms (−1: block).
    public func setReceiveTimeout(ms: Int32) throws { try setOption(ZMQ_RCVTIMEO, ms) }
    public func setSendTimeout(ms: Int32) throws { try setOption(ZMQ_SNDTIMEO, ms) }

    /// Sends a multipart message. Throws a timeout error (EAGAIN) when the send timeout passes.
    public func send(_ parts: [ZMQPart], dontWait: Bool = false) throws {
        for (i, part) in parts.enumerated() {
            var flags: Int32 = i < parts.count - 1 ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            switch part {
            case .bytes(let d):
                try d.withUnsafeBytes { b in
                    try zmqCall("send", zmq_send(handle, b.baseAddress, b.count, flags))
                }
            case .text(let s):
                var s = s
                try s.withUTF8 { b in try zmqCall("send", zmq_send(handle, b.baseAddress, b.count, flags)) }
            case .shared(let data) where data.count < sharedThreshold:
                // Small Data lives inline (its bytes have no stable address): copy it.
                try data.withUnsafeBytes { b in
                    try zmqCall("send", zmq_send(handle, b.baseAddress, b.count, flags))
                }
            case .shared(let data):
                let box = Unmanaged.passRetained(DataBox(data))
                // The pointer outlives the closure: `box` holds a copy of `data`, whose storage is
                // immutable while it is shared, until libzmq's free callback releases the box.
                let start = data.withUnsafeBytes { $0.baseAddress }
                var msg = zmq_msg_t()
                let rc = zmq_msg_init_data(
                    &msg, UnsafeMutableRawPointer(mutating: start ?? UnsafeRawPointer(bitPattern: 1)!), data.count,
                    dataFree, box.toOpaque())
                if rc != 0 {
                    box.release()
                    try zmqCall("zmq_msg_init_data", rc)
                }
                if zmq_msg_send(&msg, handle, flags) < 0 {
                    let code = moire_zmq_errno()
                    zmq_msg_close(&msg)  // releases the box
                    throw ZMQError(code: code, operation: "send")
                }
            case .zeroCopy(let ptr, let count, let release):
                var msg = zmq_msg_t()
                let box = Unmanaged.passRetained(ReleaseBox(release)).toOpaque()
                let rc = zmq_msg_init_data(&msg, UnsafeMutableRawPointer(mutating: ptr), count, zeroCopyFree, box)
                if rc != 0 {
                    Unmanaged<ReleaseBox>.fromOpaque(box).takeRetainedValue().release()
                    try zmqCall("zmq_msg_init_data", rc)
                }
                let sent = zmq_msg_send(&msg, handle, flags)
                if sent < 0 {
                    let code = moire_zmq_errno()
                    zmq_msg_close(&msg)  // runs the release callback
                    throw ZMQError(code: code, operation: "send")
                }
            }
        }
    }

    /// Receives one whole multipart message. Throws a timeout error (EAGAIN) when the timeout passes.
    public func receive(dontWait: Bool = false) throws -> [ZMQMessage] {
        var parts: [ZMQMessage] = []
        repeat {
            let m = ZMQMessage()
            try zmqCall("receive", zmq_msg_recv(m.msg, handle, dontWait && parts.isEmpty ? ZMQ_DONTWAIT : 0))
            parts.append(m)
        } while zmq_msg_more(parts[parts.count - 1].msg) != 0
        return parts
    }

    /// Waits up to `timeoutMs` for a message to read; true when one is ready.
    public func poll(timeoutMs: Int) throws -> Bool {
        var item = zmq_pollitem_t(socket: handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        let n = try zmqCall("poll", zmq_poll(&item, 1, timeoutMs))
        return n > 0 && (item.revents & Int16(ZMQ_POLLIN)) != 0
    }

    /// Waits up to `timeoutMs` for a message on this socket or on `other`; which of them has one.
    public func poll(with other: borrowing ZMQSocket, timeoutMs: Int) throws -> (this: Bool, other: Bool) {
        var items = [
            zmq_pollitem_t(socket: handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0),
            zmq_pollitem_t(socket: other.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0),
        ]
        let n = try zmqCall("poll", zmq_poll(&items, 2, timeoutMs))
        guard n > 0 else { return (false, false) }
        return ((items[0].revents & Int16(ZMQ_POLLIN)) != 0, (items[1].revents & Int16(ZMQ_POLLIN)) != 0)
    }
}

/// Loopback-only rule for the result bus (EndpointRule): anything beyond this machine needs CURVE keys.
public func checkLoopback(_ endpoint: String) throws {
    if let problem = EndpointRule.bindProblem(endpoint) {
        throw MoireError(.transport, "refusing to bind \(endpoint): \(problem)", place: endpoint)
    }
}
