import CZMQ
import Foundation
import MoireCore

/// The result bus: a PUB endpoint (loopback by default) that any ZeroMQ client can read.
///
/// It replays the last `start` to each subscriber that joins, so a late joiner can interpret
/// the frames; the replay goes to every subscriber of the `run` topic, so clients key on the run
/// id. Headers keep their stream's contiguous sequence numbers; missing frames go out as headers
/// with `missing: true` and an empty payload. Used from one thread.
// Sendable by hand: the PUB socket is used by the publisher's one stage thread (see the doc).
public final class ResultPublisher: @unchecked Sendable {
    private let socket: ZMQSocket
    public let endpoint: String
    private var lastStart: Data?
    public private(set) var subscriptions = 0
    public private(set) var sent = 0

    public init(context: ZMQContext = .shared, endpoint: String) throws {
        try checkLoopback(endpoint)
        socket = try ZMQSocket(context, type: .xpub)
        try socket.setOption(ZMQ_XPUB_VERBOSE, 1)
        try socket.setOption(ZMQ_SNDHWM, 10_000)
        do { try socket.bind(endpoint) } catch let e as ZMQError {
            throw MoireError(.transport, "cannot bind the result bus: \(e)", place: endpoint)
        }
        self.endpoint = try socket.lastEndpoint()
    }

    /// Handles pending subscriptions: each new one gets the last `start`.
    public func serviceSubscriptions() {
        while let parts = try? socket.receive(dontWait: true) {
            guard let first = parts.first, first.count > 0, first.bytes[0] == 1 else { continue }
            subscriptions += 1
            if let lastStart { try? socket.send([.text("run"), .bytes(lastStart), .bytes(Data())], dontWait: true) }
        }
    }

    public func publishStart(_ start: RunStart) throws {
        let json = try Wire.encode(start)
        lastStart = json
        try send([.text("run"), .bytes(json), .bytes(Data())])
    }

    public func publishStop(_ stop: RunStop) throws {
        try send([.text("run"), .bytes(Wire.encode(stop)), .bytes(Data())])
    }

    /// Publishes a frame (payload copied into the message: the bus may be remote).
    public func publish(header: FrameHeader, payload: UnsafeRawBufferPointer) throws {
        var h = header
        h.publishedNs = unixTimeNs()
        let data = payload.count > 0 && !h.missing ? Data(payload) : Data()
        try send([.text(Wire.topic(for: h)), .bytes(Wire.encode(h)), .bytes(data)])
    }

    private func send(_ parts: [ZMQPart]) throws {
        serviceSubscriptions()
        do { try socket.send(parts) } catch let e as ZMQError { throw e.moireError }
        sent += 1
    }
}
