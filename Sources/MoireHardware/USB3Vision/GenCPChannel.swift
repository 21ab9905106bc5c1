import Foundation
import MoireCore

/// What a USB3 Vision control channel writes and reads: the bulk endpoint pair of the control
/// interface (libusb) or a simulated peer.
public protocol ControlTransport: AnyObject, Sendable {
    func send(_ bytes: [UInt8], timeoutMs: Int) throws
    /// The next message from the device, or nil when none came within `timeoutMs`.
    func receive(timeoutMs: Int) throws -> [UInt8]?
}

/// The GenCP control channel: one transaction at a time, request ids counting up (never 0), the
/// device's answer awaited within `timeoutMs` (the ABRM's maximum device response time); a pending
/// acknowledge for the same request replaces the deadline by the time it announces, as the
/// standard says; acknowledges of other (stale) requests are skipped; a non-success status or an
/// acknowledge of the wrong command is a typed error naming the address.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class GenCPChannel: @unchecked Sendable {
    let transport: ControlTransport
    public var timeoutMs: Int
    public private(set) var nextRequestID: UInt16 = 1
    /// Pending acknowledges received so far (diagnostics, tests).
    public private(set) var pendingAcks = 0
    /// Largest data a ReadMem may ask for in one command (from the SBRM's acknowledge length).
    public var maxReadBytes = 512
    private let lock = NSLock()

    public init(transport: ControlTransport, timeoutMs: Int = 200) {
        self.transport = transport; self.timeoutMs = timeoutMs
    }

    private func takeRequestID() -> UInt16 {
        let id = nextRequestID
        nextRequestID = nextRequestID == .max ? 1 : nextRequestID + 1
        return id
    }

    func transact(_ cmd: GenCPCommand, what: String) throws -> GenCPAck {
        lock.lock(); defer { lock.unlock() }
        var c = cmd
        c.requestID = takeRequestID()
        try transport.send(c.encode(), timeoutMs: timeoutMs)
        var deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline, let bytes = try transport.receive(timeoutMs: Int((deadline - now) / 1_000_000) + 1)
            else {
                throw MoireError(.deadline, "no acknowledge within the device's response time", place: what)
            }
            let ack = try GenCPAck.decode(bytes)
            guard ack.requestID == c.requestID else { continue }  // a late answer to an earlier request
            if ack.commandID == U3V.pendingAck {
                pendingAcks += 1
                deadline = DispatchTime.now().uptimeNanoseconds + UInt64(try ack.pendingTimeoutMs()) * 1_000_000
                continue
            }
            guard ack.commandID == c.commandID + 1 else {
                throw MoireError(
                    .format,
                    String(format: "acknowledge 0x%04X does not answer command 0x%04X", ack.commandID, c.commandID),
                    place: what)
            }
            guard ack.status == 0 else {
                throw MoireError(.hardware, "the device answered: \(U3V.statusText(ack.status))", place: what)
            }
            return ack
        }
    }

    /// Reads `count` bytes at `address` (in pieces of at most `maxReadBytes`).
    public func readMem(address: UInt64, count: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        while out.count < count {
            let n = min(maxReadBytes, count - out.count)
            let what = String(format: "ReadMem 0x%llX (%d bytes)", address + UInt64(out.count), n)
            let ack = try transact(
                .readMem(address: address + UInt64(out.count), count: UInt16(n), requestID: 0), what: what)
            guard ack.scd.count == n else {
                throw MoireError(.format, "the device returned \(ack.scd.count) bytes for \(n)", place: what)
            }
            out += ack.scd
        }
        return out
    }

    public func writeMem(address: UInt64, data: [UInt8]) throws {
        let what = String(format: "WriteMem 0x%llX (%d bytes)", address, data.count)
        let ack = try transact(.writeMem(address: address, data: data, requestID: 0), what: what)
        if !ack.scd.isEmpty, try ack.bytesWritten() != data.count {
            throw MoireError(
                .hardware, "the device wrote \(try ack.bytesWritten()) of \(data.count) bytes", place: what)
        }
    }

    public func readU32(_ address: UInt64) throws -> UInt32 {
        var r = LEReader(try readMem(address: address, count: 4), what: "register")
        return try r.u32()
    }
    public func readU64(_ address: UInt64) throws -> UInt64 {
        var r = LEReader(try readMem(address: address, count: 8), what: "register")
        return try r.u64()
    }
    public func writeU32(_ address: UInt64, _ v: UInt32) throws {
        var b: [UInt8] = []
        b.le(v)
        try writeMem(address: address, data: b)
    }
}
