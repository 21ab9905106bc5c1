import Foundation
import MoireCore
import MoireHardware

/// A USB3 Vision device's control side, byte for byte, for tests: a register map answering GenCP
/// ReadMem/WriteMem through an in-memory transport, with the standard's timing behaviours on demand
/// (pending acknowledges before a slow answer, silence, a stale acknowledge, vanishing).
// Sendable by hand: mutable state guarded by `cond` (NSCondition).
public final class SimulatedU3VPeer: ControlTransport, @unchecked Sendable {
    public var memory: [UInt64: UInt8] = [:]
    /// Before each answer: this many pending acknowledges announcing `pendingTimeoutMs`, and the
    /// final answer after `answerDelayMs`.
    public var pendingBeforeAnswer = 0
    public var pendingTimeoutMs: UInt16 = 500
    public var answerDelayMs = 0
    /// Send a stale acknowledge (an earlier request id) before each answer.
    public var staleFirst = false
    /// Never answer.
    public var silent = false
    /// The device is gone: every transfer fails (a waiting receive at once).
    public var vanished: Bool {
        get { cond.lock(); defer { cond.unlock() }; return _vanished }
        set { cond.lock(); _vanished = newValue; cond.broadcast(); cond.unlock() }
    }
    private var _vanished = false
    /// Status to answer with (0: success).
    public var failStatus: UInt16 = 0
    public private(set) var commands: [GenCPCommand] = []
    /// Called after every WriteMem with its address and data (the device reacting to a register).
    public var onWrite: ((UInt64, [UInt8]) -> Void)?
    private let cond = NSCondition()
    private var outbox: [(due: UInt64, bytes: [UInt8])] = []

    public init() {}

    public func setU32(_ address: UInt64, _ v: UInt32) { var b: [UInt8] = []; b.le(v); setBytes(address, b) }
    public func setU64(_ address: UInt64, _ v: UInt64) { var b: [UInt8] = []; b.le(v); setBytes(address, b) }
    public func setBytes(_ address: UInt64, _ bytes: [UInt8]) {
        cond.lock(); defer { cond.unlock() }; for (i, b) in bytes.enumerated() { memory[address + UInt64(i)] = b }
    }
    public func u32(_ address: UInt64) -> UInt32 {
        cond.lock(); defer { cond.unlock() };
        return (0..<4).reduce(0) { $0 | UInt32(memory[address + UInt64($1)] ?? 0) << (8 * UInt32($1)) }
    }

    public func send(_ bytes: [UInt8], timeoutMs: Int) throws {
        let cmd = try GenCPCommand.decode(bytes)
        cond.lock()
        guard !_vanished else {
            cond.unlock(); throw MoireError(.hardware, "device disconnected", place: "USB3 Vision peer")
        }
        var written: (UInt64, [UInt8])?
        defer { cond.unlock(); if let (a, d) = written { onWrite?(a, d) } }
        commands.append(cmd)
        guard !silent else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        if staleFirst {
            outbox.append(
                (
                    now,
                    GenCPAck(status: 0, commandID: cmd.commandID + 1, requestID: cmd.requestID &- 1, scd: []).encode()
                ))
        }
        for i in 0..<pendingBeforeAnswer {
            var scd: [UInt8] = []
            scd.le(UInt16(0)); scd.le(pendingTimeoutMs)
            outbox.append(
                (
                    now + UInt64(i) * 1_000_000,
                    GenCPAck(status: 0, commandID: U3V.pendingAck, requestID: cmd.requestID, scd: scd).encode()
                ))
        }
        var answer = GenCPAck(status: failStatus, commandID: cmd.commandID + 1, requestID: cmd.requestID, scd: [])
        if failStatus == 0 {
            var r = LEReader(cmd.scd, what: "peer")
            let address = try r.u64()
            switch cmd.commandID {
            case U3V.readMemCmd:
                _ = try r.u16()
                let n = Int(try r.u16())
                answer.scd = (0..<n).map { memory[address + UInt64($0)] ?? 0 }
            case U3V.writeMemCmd:
                let data = Array(cmd.scd.dropFirst(8))
                for (i, b) in data.enumerated() { memory[address + UInt64(i)] = b }
                answer.scd.le(UInt16(0)); answer.scd.le(UInt16(data.count))
                written = (address, data)
            default:
                answer.status = 0x8001
            }
        }
        outbox.append((now + UInt64(answerDelayMs) * 1_000_000, answer.encode()))
        // Messages leave in the order they are due (a late answer to an earlier request may still be on its way).
        outbox = outbox.enumerated().sorted { ($0.element.due, $0.offset) < ($1.element.due, $1.offset) }.map(\.element)
        cond.broadcast()
    }

    public func receive(timeoutMs: Int) throws -> [UInt8]? {
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        cond.lock(); defer { cond.unlock() }
        while true {
            guard !_vanished else { throw MoireError(.hardware, "device disconnected", place: "USB3 Vision peer") }
            let now = DispatchTime.now().uptimeNanoseconds
            if let first = outbox.first, first.due <= now { outbox.removeFirst(); return first.bytes }
            guard now < end else { return nil }
            let wake = min(end, outbox.first?.due ?? end)
            _ = cond.wait(until: Date(timeIntervalSinceNow: Double(wake - now) / 1e9))
        }
    }
}
