import CZMQ
import Foundation
import MoireCore
import Synchronization

/// The in-process raw bus: frames cross it without copying.
///
/// An XPUB socket bound to an `inproc://` endpoint. A frame's payload is sent with
/// `zmq_msg_init_data` pointing into its `FramePool` slot; libzmq shares that one buffer among
/// all subscribers and calls back when the last of them closed its message, which releases the
/// slot. High-water marks are off and `XPUB_NODROP` is on: the bus never drops a frame; memory
/// is bounded by the pool (no free slot ⇒ the camera counts a lost frame).
/// Normally used from one thread (the producer's); `lock` makes any other use safe too.
// Sendable by hand: the socket and the subscriber count are used only under `lock`.
public final class RawBus: @unchecked Sendable {
    public let endpoint: String
    private let lock = NSLock()
    private let socket: ZMQSocket
    private var subscribers = 0

    public init(context: ZMQContext = .shared, endpoint: String? = nil) throws {
        self.endpoint = endpoint ?? "inproc://moire-raw-\(UUID().uuidString)"
        socket = try ZMQSocket(context, type: .xpub)
        try socket.setOption(ZMQ_SNDHWM, 0)
        try socket.setOption(ZMQ_XPUB_NODROP, 1)
        try socket.setOption(ZMQ_XPUB_VERBOSE, 1)
        try socket.bind(self.endpoint)
    }

    /// Waits until `count` subscriptions have arrived (subscribers connect asynchronously).
    public func waitForSubscribers(_ count: Int, timeoutMs: Int = 5000) throws {
        lock.lock()
        defer { lock.unlock() }
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while subscribers < count {
            let left = Int(deadline.timeIntervalSinceNow * 1000)
            guard left > 0 else {
                throw MoireError(
                    .transport, "only \(subscribers) of \(count) raw-bus subscribers connected within \(timeoutMs) ms",
                    place: endpoint)
            }
            if try socket.poll(timeoutMs: left) { drainSubscriptions() }
        }
    }

    private func drainSubscriptions() {
        while let parts = try? socket.receive(dontWait: true) {
            if parts.first?.firstByte == 1 { subscribers += 1 }
        }
    }

    /// Publishes a frame, handing its slot reference to the bus (released when every subscriber is done).
    public func publish(_ frame: Frame) throws {
        lock.lock()
        defer { lock.unlock() }
        var header = frame.header
        header.publishedNs = unixTimeNs()
        let json = try Wire.encode(header)
        let topic = Wire.topic(for: header)
        if let slot = frame.slot, !header.missing {
            let ptr = UnsafeRawPointer(slot.pool.address(of: slot.index))
            try sendRetrying([
                .text(topic), .bytes(json), .zeroCopy(ptr, header.byteCount, release: { slot.release() }),
            ])
        } else {
            frame.release()
            try sendRetrying([.text(topic), .bytes(json), .bytes(Data())])
        }
    }

    /// Publishes a `run` lifecycle message.
    public func publishRun(_ json: Data) throws {
        lock.lock()
        defer { lock.unlock() }
        try sendRetrying([.text("run"), .bytes(json), .bytes(Data())])
    }

    private func sendRetrying(_ parts: [ZMQPart]) throws {
        var attempts = 0
        while true {
            do {
                try socket.send(parts)
                return
            } catch let e as ZMQError where e.isTimeout && attempts < 10_000 {
                attempts += 1
                usleep(100)
            }
        }
    }
}

/// One item read from a bus.
// Sendable by hand: a frame item holds a slot reference that one consumer releases; headers are values.
public enum BusItem: @unchecked Sendable {
    /// A frame: its header and the payload, still in the sender's buffer while this lives.
    case frame(FrameHeader, ZMQMessage)
    /// A `run` lifecycle message, decoded, and its JSON as sent (to pass on unchanged).
    case run(RunMessage, Data)
}

/// A subscriber to the raw bus or a result publisher. Normally read by one thread; its counters
/// may be read from any.
// Sendable by hand: the socket is used only under `socketLock`; the decode failures are in a Mutex.
public final class BusSubscriber: @unchecked Sendable {
    private let socketLock = NSLock()
    private let socket: ZMQSocket
    public let endpoint: String
    private let decodeFailures = Mutex<(count: Int, last: MoireError?)>((0, nil))
    /// Messages that failed to decode (counted, skipped).
    public var malformed: Int { decodeFailures.withLock { $0.count } }
    /// Why the last skipped message failed to decode.
    public var lastError: MoireError? { decodeFailures.withLock { $0.last } }

    public init(context: ZMQContext = .shared, endpoint: String, topics: [String] = [""]) throws {
        self.endpoint = endpoint
        socket = try ZMQSocket(context, type: .sub)
        try socket.setOption(ZMQ_RCVHWM, 0)
        for t in topics { try socket.subscribe(t) }
        try socket.connect(endpoint)
    }

    /// The next item, or nil when `timeoutMs` passed without one. Malformed messages are skipped and counted.
    public func next(timeoutMs: Int) throws -> BusItem? {
        socketLock.lock()
        defer { socketLock.unlock() }
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while true {
            let left = max(0, Int(deadline.timeIntervalSinceNow * 1000))
            guard try socket.poll(timeoutMs: left) else { return nil }
            let parts = try socket.receive()
            do {
                return try decode(parts)
            } catch let e as MoireError {
                decodeFailures.withLock { $0 = ($0.count + 1, e) }
                if left == 0 { return nil }
            }
        }
    }

    /// Decodes one multipart message of wire format v1.
    public static func decode(_ parts: [ZMQMessage]) throws -> BusItem {
        guard parts.count == 3 else {
            throw MoireError(.format, "expected 3 message parts [topic][header][payload], got \(parts.count)")
        }
        let topic = parts[0].string
        if topic == "run" {
            let json = parts[1].data
            return .run(try RunMessage.decode(json), json)
        }
        let h = try Wire.decodeFrame(topic: topic, header: parts[1].data, payloadBytes: parts[2].count)
        guard topic == Wire.topic(for: h) else {
            throw MoireError(
                .format, "topic '\(topic)' does not match the header's stream and channel", place: "topic \(topic)")
        }
        return .frame(h, parts[2])
    }

    private func decode(_ parts: [ZMQMessage]) throws -> BusItem { try Self.decode(parts) }
}
