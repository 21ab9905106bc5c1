import CZMQ
import Foundation
import MoireCore

/// The daemon's Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.1 on a loopback
/// tcp port, answered with the text exposition format that `exposition()` returns at that moment.
///
/// It is a ZeroMQ STREAM socket (raw TCP, one identity frame per connection), so every socket of
/// Moiré stays behind the one module that links libzmq and no HTTP server library is built into
/// the daemon for one read-only page. It answers one request per connection and closes it;
/// requests larger than 8 KiB, other methods and other paths get 413, 405 and 404.
// Sendable by hand: the socket is used by the endpoint's own thread only; `stopped` guarded by `lock`.
public final class MetricsEndpoint: @unchecked Sendable {
    /// The endpoint as bound (a `:*` port resolved).
    public let endpoint: String
    /// Requests answered so far (any status).
    public var requestsAnswered: Int {
        lock.lock()
        defer { lock.unlock() }
        return answered
    }
    private let socket: ZMQSocket
    private let exposition: @Sendable () -> String
    private let lock = NSLock()
    private var stopped = false
    private var answered = 0
    private let done = DispatchSemaphore(value: 0)
    /// Bytes of a request received so far, by connection identity.
    private var pending: [Data: Data] = [:]
    static let maximumRequestBytes = 8192

    /// Binds `endpoint` (loopback tcp only) and serves `exposition` until `stop()`.
    public init(endpoint: String, exposition: @escaping @Sendable () -> String) throws {
        guard endpoint.hasPrefix("tcp://") else {
            throw MoireError(.usage, "the metrics endpoint is an HTTP port: tcp://127.0.0.1:PORT", place: endpoint)
        }
        try checkLoopback(endpoint)
        socket = try ZMQSocket(.shared, type: .stream)
        try socket.bind(endpoint)
        self.endpoint = try socket.lastEndpoint()
        self.exposition = exposition
        let thread = Thread { [self] in serve() }
        thread.name = "moire.metrics"
        thread.start()
    }

    /// The URL a scraper reads.
    public var url: String { "http://" + endpoint.dropFirst("tcp://".count) + "/metrics" }

    /// Stops serving and waits for the thread (the socket closes with the endpoint).
    public func stop() {
        lock.lock()
        let first = !stopped
        stopped = true
        lock.unlock()
        if first { done.wait() }
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    private func serve() {
        defer { done.signal() }
        while !isStopped {
            guard (try? socket.poll(timeoutMs: 100)) == true, let parts = try? socket.receive(dontWait: true),
                parts.count == 2
            else { continue }
            let identity = parts[0].data
            let bytes = parts[1].data
            // An empty message is libzmq's notice of a connection opening or closing.
            guard !bytes.isEmpty else {
                pending[identity] = nil
                continue
            }
            var request = pending[identity] ?? Data()
            request.append(bytes)
            if request.count > Self.maximumRequestBytes {
                pending[identity] = nil
                answer(identity, status: "413 Content Too Large", body: "request too large\n")
                continue
            }
            guard let end = request.range(of: Data("\r\n\r\n".utf8)) else {
                pending[identity] = request
                continue
            }
            pending[identity] = nil
            let head = String(decoding: request[..<end.lowerBound], as: UTF8.self)
            let words = head.prefix { $0 != "\r" }.split(separator: " ")
            if words.count < 2 || words[0] != "GET" {
                answer(identity, status: "405 Method Not Allowed", body: "only GET /metrics\n")
            } else if words[1] != "/metrics" {
                answer(identity, status: "404 Not Found", body: "the metrics are at /metrics\n")
            } else {
                answer(
                    identity, status: "200 OK", body: exposition(),
                    contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
        }
    }

    /// Sends one response and closes the connection (an empty message to the identity closes it).
    private func answer(_ identity: Data, status: String, body: String, contentType: String = "text/plain") {
        let payload = Data(body.utf8)
        let head =
            "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(payload.count)\r\n"
            + "Connection: close\r\n\r\n"
        try? socket.send([.bytes(identity), .bytes(Data(head.utf8) + payload)])
        try? socket.send([.bytes(identity), .bytes(Data())])
        lock.lock()
        answered += 1
        lock.unlock()
    }
}
