import Foundation
import MoireCore

/// A TriggerScope-style controller on the master side of a pseudo-terminal, byte for byte, for
/// tests: `*` → identification; `DAC<n>,<0…65535>` sets an analog line (galvo, piezo), `TTL<n>,<0|1>`
/// a digital line (laser, camera trigger), each answered `!` + the command; anything else `?`.
/// It logs every line state in order; `silent` stops answering, `garbage` answers noise.
public final class SimulatedSerialController: @unchecked Sendable {
    public let pty: PseudoTerminal
    public private(set) var dac: [Int: Int] = [:]
    public private(set) var ttl: [Int: Bool] = [:]
    public private(set) var log: [String] = []
    public var silent = false
    public var garbage = false
    private let lock = NSLock()
    private var running = true
    private var thread: Thread?

    public init() throws {
        pty = try PseudoTerminal()
        let t = Thread { [self] in serve() }
        t.name = "moire.sim.serial"
        thread = t
        t.start()
    }

    public func stop() { lock.lock(); running = false; lock.unlock() }
    deinit { stop() }

    public func state() -> (dac: [Int: Int], ttl: [Int: Bool], log: [String]) { lock.lock(); defer { lock.unlock() }; return (dac, ttl, log) }

    private func serve() {
        var buffer: [UInt8] = []
        while true {
            lock.lock(); let go = running; lock.unlock()
            guard go else { return }
            guard let bytes = try? pty.master.read(timeoutMs: 20) else { continue }
            buffer += bytes
            while let i = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .whitespaces)
                buffer.removeFirst(i + 1)
                lock.lock()
                let reply = answer(line)
                let quiet = silent, noise = garbage
                lock.unlock()
                if quiet { continue }
                try? pty.master.write(noise ? [0xFF, 0xFE, 0x00, 0x0A] : Array((reply + "\r\n").utf8))
            }
        }
    }

    /// Called with the lock held.
    private func answer(_ line: String) -> String {
        if line == "*" { return "Moire simulated serial controller v1" }
        let parts = line.split(separator: ",")
        if parts.count == 2, line.hasPrefix("DAC"), let n = Int(parts[0].dropFirst(3)), let v = Int(parts[1]), (1...16).contains(n), (0...65535).contains(v) {
            dac[n] = v; log.append("DAC\(n)=\(v)"); return "!" + line
        }
        if parts.count == 2, line.hasPrefix("TTL"), let n = Int(parts[0].dropFirst(3)), let v = Int(parts[1]), (1...16).contains(n), v == 0 || v == 1 {
            ttl[n] = v == 1; log.append("TTL\(n)=\(v)"); return "!" + line
        }
        return "?"
    }
}
