import Foundation
import MoireCore
import MoireHardware

/// A TriggerScope-style controller on the master side of a pseudo-terminal, byte for byte, for
/// tests: `*` → identification; `DAC<n>,<0…65535>` sets an analog line (galvo, piezo, laser power),
/// `TTL<n>,<0|1>` a digital line (laser, camera trigger), `PDAC<n>,<i>,<value>` stores entry i of an
/// analog line's sequence and `ARM<n>,<count>` arms it (each trigger-in pulse then steps the line to
/// the next entry; a count of 0 disarms); each answered `!` + the command, anything else `?`. It logs every line state in
/// order and tells `onLine` of every accepted command (the wires to the simulated devices);
/// `silent` stops answering, `garbage` answers noise, `vanish()` hangs up.
// Sendable by hand: mutable state guarded by `lock` (NSLock), `served` (DispatchSemaphore).
public final class SimulatedSerialController: @unchecked Sendable {
    public let pty: PseudoTerminal
    public private(set) var dac: [Int: Int] = [:]
    public private(set) var ttl: [Int: Bool] = [:]
    public private(set) var log: [String] = []
    public var silent = false
    public var garbage = false
    /// Called (outside the lock) with every accepted command line.
    public var onLine: ((String) -> Void)?
    private var tables: [Int: [Int: Int]] = [:]
    private var armed: [Int: (count: Int, next: Int)] = [:]
    private let lock = NSLock()
    private var running = true
    private let served = DispatchSemaphore(value: 0)

    public init() throws {
        pty = try PseudoTerminal()
        let t = Thread { [self] in serve() }
        t.name = "moire.sim.serial"
        t.start()
    }

    public func stop() { lock.lock(); running = false; lock.unlock() }
    deinit { stop() }

    /// The controller is unplugged: it stops answering and its side of the line closes.
    public func vanish() {
        lock.lock(); let was = running; running = false; lock.unlock()
        if was { served.wait() }  // the serving thread has left the port
        pty.master.hangUp()
    }

    public func state() -> (dac: [Int: Int], ttl: [Int: Bool], log: [String]) {
        lock.lock(); defer { lock.unlock() }; return (dac, ttl, log)
    }

    /// A pulse on the trigger input: every armed analog line steps to its next stored value.
    public func triggerIn() {
        var lines: [String] = []
        lock.lock()
        for (n, a) in armed.sorted(by: { $0.key < $1.key }) {
            guard let v = tables[n]?[a.next % a.count] else { continue }
            dac[n] = v; log.append("DAC\(n)=\(v)")
            armed[n] = (a.count, a.next + 1)
            lines.append("DAC\(n),\(v)")
        }
        lock.unlock()
        for l in lines { onLine?(l) }
    }

    private func serve() {
        defer { served.signal() }
        var buffer: [UInt8] = []
        while true {
            lock.lock(); let go = running; lock.unlock()
            guard go else { return }
            guard let bytes = try? pty.master.read(timeoutMs: 20) else { continue }
            buffer += bytes
            while let i = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeFirst(i + 1)
                lock.lock()
                let reply = answer(line)
                let quiet = silent
                let noise = garbage
                lock.unlock()
                if reply.hasPrefix("!") { onLine?(line) }
                if quiet { continue }
                try? pty.master.write(noise ? [0xFF, 0xFE, 0x00, 0x0A] : Array((reply + "\r\n").utf8))
            }
        }
    }

    /// Called with the lock held.
    private func answer(_ line: String) -> String {
        if line == "*" { return "ARC TRIGGERSCOPE-style controller (Moire simulated) v1" }
        let parts = line.split(separator: ",", omittingEmptySubsequences: false)
        func num(_ s: Substring, drop: Int = 0) -> Int? { Int(s.dropFirst(drop)) }
        if parts.count == 2, line.hasPrefix("DAC"), let n = num(parts[0], drop: 3), let v = num(parts[1]),
            (1...16).contains(n), (0...65535).contains(v)
        {
            dac[n] = v; log.append("DAC\(n)=\(v)"); return "!" + line
        }
        if parts.count == 2, line.hasPrefix("TTL"), let n = num(parts[0], drop: 3), let v = num(parts[1]),
            (1...16).contains(n), v == 0 || v == 1
        {
            ttl[n] = v == 1; log.append("TTL\(n)=\(v)"); return "!" + line
        }
        if parts.count == 3, line.hasPrefix("PDAC"), let n = num(parts[0], drop: 4), let i = num(parts[1]),
            let v = num(parts[2]),
            (1...16).contains(n), (0..<1024).contains(i), (0...65535).contains(v)
        {
            tables[n, default: [:]][i] = v; return "!" + line
        }
        if parts.count == 2, line.hasPrefix("ARM"), let n = num(parts[0], drop: 3), num(parts[1]) == 0,
            (1...16).contains(n)
        {
            armed[n] = nil; log.append("ARM\(n)=0"); return "!" + line
        }
        if parts.count == 2, line.hasPrefix("ARM"), let n = num(parts[0], drop: 3), let c = num(parts[1]),
            (1...16).contains(n), c > 0,
            (0..<c).allSatisfy({ tables[n]?[$0] != nil })
        {
            armed[n] = (c, 0); log.append("ARM\(n)=\(c)"); return "!" + line
        }
        return "?"
    }
}
