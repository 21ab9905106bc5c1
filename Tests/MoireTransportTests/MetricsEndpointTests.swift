import Foundation
import MoireCore
import Testing

@testable import MoireTransport

/// A plain TCP client (POSIX sockets, not ZeroMQ): sends `request` in `pieces` and returns
/// everything the server sent until it closed the connection.
private func httpExchange(_ endpoint: String, _ request: String, pieces: Int = 1) throws -> String {
    let address = endpoint.dropFirst("tcp://".count)
    let port = UInt16(address.split(separator: ":").last!)!
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var server = sockaddr_in()
    server.sin_family = sa_family_t(AF_INET)
    server.sin_port = port.bigEndian
    server.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &server) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw MoireError(.transport, "connect failed: errno \(errno)", place: endpoint) }
    let bytes = Array(request.utf8)
    let pieceSize = max(1, (bytes.count + pieces - 1) / pieces)
    for start in stride(from: 0, to: bytes.count, by: pieceSize) {
        let piece = Array(bytes[start..<min(bytes.count, start + pieceSize)])
        _ = piece.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        usleep(20_000)
    }
    var response = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    return String(decoding: response, as: UTF8.self)
}

@Suite struct MetricsEndpointTests {
    /// GET /metrics answers 200 with the exposition as it is at that moment and an exact
    /// Content-Length, also when the request arrives in pieces; other paths, methods and oversized
    /// requests get 404, 405 and 413; a non-loopback endpoint is refused before anything is bound.
    @Test func servesTheExpositionAndRefusesEverythingElse() throws {
        let lock = NSLock()
        nonisolated(unsafe) var scrapes = 0
        let endpoint = try MetricsEndpoint(endpoint: "tcp://127.0.0.1:*") {
            lock.lock()
            defer { lock.unlock() }
            scrapes += 1
            return "# TYPE moire_test_total counter\nmoire_test_total \(scrapes)\n"
        }
        defer { endpoint.stop() }
        #expect(endpoint.url.hasPrefix("http://127.0.0.1:") && endpoint.url.hasSuffix("/metrics"))

        let get = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
        let first = try httpExchange(endpoint.endpoint, get)
        #expect(first.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(first)")
        #expect(first.contains("Content-Type: text/plain; version=0.0.4"))
        let body = first.components(separatedBy: "\r\n\r\n").last ?? ""
        #expect(body == "# TYPE moire_test_total counter\nmoire_test_total 1\n")
        #expect(first.contains("Content-Length: \(body.utf8.count)\r\n"))
        let second = try httpExchange(endpoint.endpoint, get, pieces: 4)
        #expect(second.hasSuffix("moire_test_total 2\n"), "\(second)")

        #expect(try httpExchange(endpoint.endpoint, "GET / HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 404"))
        #expect(try httpExchange(endpoint.endpoint, "POST /metrics HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 405"))
        let huge = "GET /metrics HTTP/1.1\r\nX-Padding: " + String(repeating: "a", count: 20_000) + "\r\n\r\n"
        #expect(try httpExchange(endpoint.endpoint, huge).hasPrefix("HTTP/1.1 413"))
        #expect(endpoint.requestsAnswered == 5)

        #expect(throws: MoireError.self) { try MetricsEndpoint(endpoint: "tcp://0.0.0.0:*") { "" } }
        #expect(throws: MoireError.self) { try MetricsEndpoint(endpoint: "ipc:///tmp/metrics.sock") { "" } }
    }
}
