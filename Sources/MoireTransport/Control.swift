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

/// The daemon's answer.
public struct ControlReply: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    /// Runner state: idle, arming, acquiring, paused, stopping, faulted.
    public var state: String?
    public var run: String?
    public var frames: Int?
    public var missing: Int?
    public var planned: Int?
    public var recording: String?
    public var publish: String?
    public init(
        ok: Bool, error: String? = nil, state: String? = nil, run: String? = nil, frames: Int? = nil,
        missing: Int? = nil, planned: Int? = nil, recording: String? = nil, publish: String? = nil
    ) {
        self.ok = ok; self.error = error; self.state = state; self.run = run; self.frames = frames
        self.missing = missing; self.planned = planned; self.recording = recording; self.publish = publish
    }
}

/// Serves control requests on a REP socket until `stop()`; one request at a time.
// Sendable by hand: mutable state guarded by `stopFlag` (NSLock).
public final class ControlServer: @unchecked Sendable {
    private let socket: ZMQSocket
    public let endpoint: String
    private let stopFlag = NSLock()
    private var stopped = false

    public init(context: ZMQContext = .shared, endpoint: String) throws {
        try checkLoopback(endpoint)
        socket = try ZMQSocket(context, type: .rep)
        do { try socket.bind(endpoint) } catch let e as ZMQError {
            throw MoireError(.transport, "cannot bind the control endpoint: \(e)", place: endpoint)
        }
        self.endpoint = try socket.lastEndpoint()
    }

    public func stop() { stopFlag.lock(); stopped = true; stopFlag.unlock() }
    private var isStopped: Bool { stopFlag.lock(); defer { stopFlag.unlock() }; return stopped }

    /// Runs the request loop on the calling thread. Malformed requests get an error reply.
    public func serve(_ handler: (ControlRequest) -> ControlReply) {
        while !isStopped {
            guard (try? socket.poll(timeoutMs: 100)) == true, let parts = try? socket.receive() else { continue }
            let reply: ControlReply
            if let req = try? JSONDecoder().decode(ControlRequest.self, from: parts.first?.data ?? Data()) {
                reply = handler(req)
            } else {
                reply = ControlReply(
                    ok: false, error: "malformed request: expected JSON {\"cmd\": \"start|stop|status|ping\", ...}")
            }
            let json = (try? Wire.encode(reply)) ?? Data("{\"ok\":false}".utf8)
            try? socket.send([.bytes(json)])
        }
    }
}

/// A client of the control endpoint.
public enum ControlClient {
    /// Sends one request; nil when nobody answers within `timeoutMs` (no daemon running).
    public static func call(
        _ endpoint: String, _ request: ControlRequest, timeoutMs: Int32 = 2000,
        context: ZMQContext = .shared
    ) throws -> ControlReply? {
        let s = try ZMQSocket(context, type: .req)
        try s.setReceiveTimeout(ms: timeoutMs)
        try s.setSendTimeout(ms: timeoutMs)
        try s.connect(endpoint)
        try s.send([.bytes(Wire.encode(request))])
        guard try s.poll(timeoutMs: Int(timeoutMs)) else { return nil }
        let parts = try s.receive()
        do { return try JSONDecoder().decode(ControlReply.self, from: parts.first?.data ?? Data()) } catch {
            throw MoireError(.format, "malformed control reply: \(Wire.describe(error))", place: endpoint)
        }
    }
}
