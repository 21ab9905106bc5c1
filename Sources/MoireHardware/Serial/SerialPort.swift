import Foundation
import MoireCore

#if canImport(Glibc)
    import Glibc
#endif

/// A serial port (or one side of a pseudo-terminal) in raw mode through termios: 8N1, no flow
/// control, the given baud rate; reads wait with poll(2) up to a timeout.
// Sendable by hand: one owner at a time: SerialController's `lock`.
public final class SerialPort: @unchecked Sendable {
    public let path: String
    private(set) var fd: Int32

    public init(path: String, baud: Int = 115_200) throws {
        self.path = path
        fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else {
            throw MoireError(.hardware, "cannot open: \(String(cString: strerror(errno)))", place: path)
        }
        do { try SerialPort.makeRaw(fd, baud: baud, place: path) } catch { close(fd); throw error }
    }

    /// Wraps an already open descriptor (the master side of a pseudo-terminal), made raw.
    init(fd: Int32, path: String) throws {
        self.fd = fd; self.path = path
        try SerialPort.makeRaw(fd, baud: 115_200, place: path)
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Closes the port now (the peer sees a hang-up). Only when no other thread uses it.
    public func hangUp() {
        if fd >= 0 { close(fd); fd = -1 }
    }

    static func makeRaw(_ fd: Int32, baud: Int, place: String) throws {
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else {
            throw MoireError(.hardware, "not a terminal: \(String(cString: strerror(errno)))", place: place)
        }
        cfmakeraw(&t)
        t.c_cflag |= tcflag_t(CLOCAL | CREAD)
        let speeds: [Int: speed_t] = [
            9600: speed_t(B9600), 19_200: speed_t(B19200), 38_400: speed_t(B38400), 57_600: speed_t(B57600),
            115_200: speed_t(B115200), 230_400: speed_t(B230400),
        ]
        guard let sp = speeds[baud] else { throw MoireError(.config, "unsupported baud rate \(baud)", place: place) }
        cfsetispeed(&t, sp); cfsetospeed(&t, sp)
        guard tcsetattr(fd, TCSANOW, &t) == 0 else {
            throw MoireError(.hardware, "cannot configure: \(String(cString: strerror(errno)))", place: place)
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EAGAIN {
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0); _ = poll(&p, 1, 100); continue
                }
                throw MoireError(.hardware, "write failed: \(String(cString: strerror(errno)))", place: path)
            }
            off += n
        }
    }

    /// Whatever bytes arrive within `timeoutMs` (at least one), or an empty array on timeout.
    public func read(max: Int = 4096, timeoutMs: Int) throws -> [UInt8] {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let r = poll(&p, 1, Int32(timeoutMs))
        if r < 0 { throw MoireError(.hardware, "poll failed: \(String(cString: strerror(errno)))", place: path) }
        if r == 0 { return [] }
        if p.revents & Int16(POLLHUP | POLLERR) != 0 && p.revents & Int16(POLLIN) == 0 {
            throw MoireError(.hardware, "the device hung up", place: path)
        }
        var buf = [UInt8](repeating: 0, count: max)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, max) }
        if n < 0 {
            if errno == EAGAIN { return [] }
            throw MoireError(.hardware, "read failed: \(String(cString: strerror(errno)))", place: path)
        }
        if n == 0 { throw MoireError(.hardware, "the device hung up", place: path) }
        return Array(buf[0..<n])
    }
}

/// A pseudo-terminal pair: the slave path is what a driver opens like a serial port; the master is
/// the simulated device's side.
// Sendable by hand: immutable descriptors; each side used by one thread (peer or driver).
public final class PseudoTerminal: @unchecked Sendable {
    public let master: SerialPort
    public let slavePath: String

    public init() throws {
        // /dev/ptmx, unlocked (TIOCSPTLCK 0), its number (TIOCGPTN) naming /dev/pts/N — what posix_openpt,
        // unlockpt and ptsname do, which Swift's Glibc module does not export.
        let m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK)
        guard m >= 0 else { throw MoireError(.hardware, "cannot open /dev/ptmx: \(String(cString: strerror(errno)))") }
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard ioctl(m, UInt(0x4004_5431), &unlock) == 0, ioctl(m, UInt(0x8004_5430), &number) == 0 else {
            close(m)
            throw MoireError(.hardware, "cannot make a pseudo-terminal: \(String(cString: strerror(errno)))")
        }
        slavePath = "/dev/pts/\(number)"
        master = try SerialPort(fd: m, path: "pty master")
    }
}

/// Splits a serial byte stream into reply lines: a line ends at the terminator (a trailing CR is
/// dropped); a line that is not UTF-8 text, or more than `maxReply` bytes without a terminator, is
/// an error (and its bytes are discarded, so the next line decodes cleanly).
public struct SerialLineDecoder: Sendable {
    public var terminator: UInt8
    public var maxReply: Int
    private var pending: [UInt8] = []

    public init(terminator: UInt8 = 0x0A, maxReply: Int = 256) {
        self.terminator = terminator; self.maxReply = maxReply
    }

    public mutating func push(_ bytes: [UInt8]) { pending += bytes }

    /// The next complete line, nil when none is complete yet.
    public mutating func next() throws -> String? {
        if let i = pending.firstIndex(of: terminator) {
            var line = Array(pending[..<i])
            pending.removeFirst(i + 1)
            if line.last == 0x0D { line.removeLast() }
            guard line.count <= maxReply else { throw MoireError(.format, "reply longer than \(maxReply) bytes") }
            guard let s = String(validating: line, as: UTF8.self) else {
                throw MoireError(
                    .format,
                    "reply is not text: \(line.prefix(16).map { String(format: "%02X", $0) }.joined(separator: " "))")
            }
            return s
        }
        guard pending.count <= maxReply else {
            pending.removeAll()
            throw MoireError(.format, "reply longer than \(maxReply) bytes without a terminator")
        }
        return nil
    }
}

/// Line-oriented command/reply framing for serial controllers: a command is sent with the
/// terminator; the reply is the bytes up to the next terminator, within the timeout. Replies longer
/// than `maxReply`, or that do not come, are errors naming the command.
// Sendable by hand: used under SerialController's lock, one exchange at a time.
public final class SerialLineChannel: @unchecked Sendable {
    let port: SerialPort
    public var timeoutMs: Int
    private var decoder: SerialLineDecoder
    public var terminator: UInt8 { decoder.terminator }

    public init(port: SerialPort, terminator: UInt8 = 0x0A, timeoutMs: Int = 200, maxReply: Int = 256) {
        self.port = port; self.timeoutMs = timeoutMs
        decoder = SerialLineDecoder(terminator: terminator, maxReply: maxReply)
    }

    /// Sends `command` without waiting for a reply.
    public func send(_ command: String) throws {
        try port.write(Array(command.utf8) + [terminator])
    }

    /// Sends `command` and returns its reply line (without the terminator; a trailing CR is dropped).
    public func query(_ command: String) throws -> String {
        try port.write(Array(command.utf8) + [terminator])
        return try readLine(for: command)
    }

    func readLine(for command: String) throws -> String {
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        while true {
            do {
                if let line = try decoder.next() { return line }
            } catch let e as MoireError {
                throw MoireError(e.kind, e.message, place: "\(port.path): \(command)")
            }
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < end else {
                throw MoireError(.deadline, "no reply within \(timeoutMs) ms", place: "\(port.path): \(command)")
            }
            decoder.push(try port.read(timeoutMs: Int((end - now) / 1_000_000) + 1))
        }
    }
}
