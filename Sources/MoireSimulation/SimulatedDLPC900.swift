import DequeModule
import Foundation
import MoireCore
import MoireHardware

/// A DLPC900 controller's USB HID side, byte for byte, for tests: display mode, the pattern
/// look-up table (0x1A34 entries, 0x1A31 configuration), validation (0x1A1A), start/stop (0x1A24),
/// main status (0x1A0C); each message answered with a reply report (nack for unknown commands or
/// bad data). When started, its sequencer shows the table on its own clock (exposure, then dark
/// time; `repeat` passes, 0 = until stopped) or, for entries that wait for a trigger, one entry per
/// trigger-in pulse. Each shown entry calls `onDisplay` (what the mirrors show) and, on the first
/// pass of a table, pulses trigger out (`onTriggerOut`, wired to the camera). It logs every entry
/// that pulsed trigger out, in order, so a test can compare them with the frames' headers. It is
/// also a `HIDTransport`, so drivers talk to it exactly as to the USB device.
// Sendable by hand: mutable state guarded by `cond` (NSCondition).
public final class SimulatedDLPC900: HIDTransport, @unchecked Sendable {
    private let cond = NSCondition()
    public private(set) var mode: UInt8 = 0
    public private(set) var lut: [UInt16: DLPC900.LUTEntry] = [:]
    public private(set) var lutLength = 0, repeatCount: UInt32 = 0
    /// Images uploaded in pattern-on-the-fly mode (24-bit pixels), by index, and the image being received.
    public private(set) var uploaded: [Int: (width: Int, height: Int, pixels: [UInt32])] = [:]
    private var receiving: (index: Int, expected: Int, bytes: [UInt8])?
    /// An upload that did not decode (reported by validation, bit 3).
    public private(set) var uploadError: String?
    /// Trigger out 1 (invert, rising and falling delays) and trigger in 1 (delay, polarity) as configured.
    public private(set) var triggerOutConfig: [UInt8]?, triggerInConfig: [UInt8]?
    private var _running = false
    private var _shown: [DLPC900.LUTEntry] = []
    private var generation = 0
    private var triggerCount = 0
    private var outbox: Deque<[UInt8]> = []
    /// The device is gone: every transfer fails.
    public var vanished: Bool {
        get { cond.lock(); defer { cond.unlock() }; return _vanished }
        set { cond.lock(); _vanished = newValue; cond.broadcast(); cond.unlock() }
    }
    private var _vanished = false

    /// The mirrors now show this entry (nil: dark, the sequencer stopped).
    public var onDisplay: ((DLPC900.LUTEntry?) -> Void)?
    /// A trigger-out pulse at the start of an entry's exposure.
    public var onTriggerOut: (() -> Void)?

    public init() {}

    public var running: Bool { cond.lock(); defer { cond.unlock() }; return _running }
    /// Entries that pulsed trigger out (or were advanced by trigger in), in order.
    public var shown: [DLPC900.LUTEntry] { cond.lock(); defer { cond.unlock() }; return _shown }
    public func clearLog() { cond.lock(); _shown = []; cond.unlock() }

    /// Bit plane `bit` of uploaded image `image` (1: mirror on), nil when no such image came.
    public func bitPlane(image: Int, bit: Int) -> [UInt8]? {
        cond.lock(); defer { cond.unlock() }
        return uploaded[image].map { img in img.pixels.map { UInt8($0 >> UInt32(bit) & 1) } }
    }

    // MARK: HIDTransport (the host's side of the USB pipe)

    private var inbound: [[UInt8]] = []

    public func write(report: [UInt8], timeoutMs: Int) throws {
        cond.lock()
        guard !_vanished else {
            cond.unlock(); throw MoireError(.hardware, "device disconnected", place: "DLPC900 peer")
        }
        inbound.append(report)
        // A message is complete when its reports cover the length in its header (in the first report).
        let first = inbound[0]
        let h = first.count == DLPC900.reportSize + 1 ? 1 : 0
        let total = first.count >= h + 4 ? 4 + Int(UInt16(first[h + 2]) | UInt16(first[h + 3]) << 8) : 0
        guard inbound.count * DLPC900.reportSize >= total else { cond.unlock(); return }
        let message = inbound
        inbound = []
        cond.unlock()
        let reply = handle(message)
        cond.lock(); outbox += reply; cond.broadcast(); cond.unlock()
    }

    public func read(timeoutMs: Int) throws -> [UInt8]? {
        let end = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        cond.lock(); defer { cond.unlock() }
        while true {
            guard !_vanished else { throw MoireError(.hardware, "device disconnected", place: "DLPC900 peer") }
            if !outbox.isEmpty { return outbox.removeFirst() }
            if !cond.wait(until: end) { return nil }
        }
    }

    // MARK: the controller

    /// Handles one message (as reports) and returns the reply reports.
    public func handle(_ reports: [[UInt8]]) -> [[UInt8]] {
        guard let m = try? DLPC900.Message.decode(reports) else {
            return DLPC900.Message(flags: DLPC900.flagNack, sequence: 0, command: 0, data: []).reports()
        }
        var ok = true
        var data: [UInt8] = []
        cond.lock()
        switch m.command {
        case DLPC900.displayMode: if m.data.count == 1, m.data[0] <= 3 { mode = m.data[0] } else { ok = false }
        case DLPC900.lutDefinition:
            if let e = try? DLPC900.LUTEntry.decode(m.data) { lut[e.index] = e } else { ok = false }
        case DLPC900.lutConfigure:
            if m.data.count == 6 {
                lutLength = Int(UInt16(m.data[0]) | UInt16(m.data[1]) << 8)
                repeatCount = m.data[2...5].reversed().reduce(0) { $0 << 8 | UInt32($1) }
                ok = (0..<lutLength).allSatisfy { lut[UInt16($0)] != nil }
            } else {
                ok = false
            }
        case DLPC900.triggerOut1:
            if m.data.count == 5 { triggerOutConfig = m.data } else { ok = false }
        case DLPC900.triggerIn1:
            if m.data.count == 3 { triggerInConfig = m.data } else { ok = false }
        case DLPC900.patternLoadInit:
            guard m.data.count == 6 else { ok = false; break }
            let index = Int(UInt16(m.data[0]) | UInt16(m.data[1]) << 8)
            let n = Int(m.data[2...5].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            guard index < 2048, (48...(64 << 20)).contains(n) else { ok = false; break }
            receiving = (index, n, [])
            receiving!.bytes.reserveCapacity(n)
        case DLPC900.patternLoadData:
            guard m.data.count >= 2, var r = receiving else {
                ok = false; uploadError = "image data without 0x1A2A"; break
            }
            let n = Int(UInt16(m.data[0]) | UInt16(m.data[1]) << 8)
            guard n == m.data.count - 2, r.bytes.count + n <= r.expected else {
                ok = false; uploadError = "image \(r.index): a chunk of \(n) bytes does not fit"; receiving = nil; break
            }
            r.bytes += m.data[2...]
            receiving = r
            if r.bytes.count == r.expected {
                receiving = nil
                do {
                    let img = try DMDPatterns.parse(r.bytes)
                    uploaded[r.index] = img
                } catch { uploadError = "image \(r.index): \(error)" }
            }
        case DLPC900.validate:
            // bit 0: table incomplete; bit 1: an exposure shorter than the 1-bit minimum (105 µs);
            // bit 3: an uploaded image did not decode, or a pattern-on-the-fly entry names an image never uploaded.
            let complete = lutLength > 0 && (0..<lutLength).allSatisfy { lut[UInt16($0)] != nil }
            let tooShort = (0..<lutLength).contains { (lut[UInt16($0)]?.exposureUs ?? 0) < 105 }
            let missingImage =
                mode == 3 && (0..<lutLength).contains { uploaded[Int(lut[UInt16($0)]?.imageIndex ?? 0)] == nil }
            data = [(complete ? 0 : 1) | (tooShort ? 2 : 0) | (uploadError != nil || missingImage ? 8 : 0)]
        case DLPC900.mainStatus:
            data = [_running ? DLPC900Modulator.statusSequencerRunning : 0x01]
        case DLPC900.patternStartStop:
            guard m.data.count == 1, m.data[0] <= 2 else { ok = false; break }
            if m.data[0] == 2 {
                // Starting needs a pattern mode and a configured table.
                if (mode == 1 || mode == 3) && lutLength > 0 { startLocked() } else { ok = false }
            } else {
                stopLocked()  // stop or pause
            }
        default: ok = false
        }
        cond.unlock()
        guard m.flags & DLPC900.flagReply != 0 else { return [] }  // no reply asked for
        return DLPC900.Message(flags: ok ? 0 : DLPC900.flagNack, sequence: m.sequence, command: m.command, data: data)
            .reports()
    }

    private func startLocked() {
        stopLocked()
        _running = true
        generation += 1
        triggerCount = 0
        let gen = generation
        let table = (0..<lutLength).map { lut[UInt16($0)]! }
        let passes = repeatCount
        guard !table.contains(where: \.waitForTrigger) else { return }  // advanced by trigger-in pulses
        // The first entry is on the mirrors (and has fired trigger out) before the start is acknowledged.
        onDisplay?(table[0])
        _shown.append(table[0])
        onTriggerOut?()
        let t = Thread { [self] in sequence(table, passes: passes, generation: gen) }
        t.name = "moire.sim.dlpc900"
        t.start()
    }

    private func stopLocked() {
        if _running { generation += 1; _running = false; cond.broadcast(); onDisplay?(nil) }
    }

    /// Waits `us` microseconds unless the sequence is stopped; false when stopped.
    private func wait(us: UInt32, _ gen: Int) -> Bool {
        let end = Date().addingTimeInterval(Double(us) / 1e6)
        cond.lock(); defer { cond.unlock() }
        while generation == gen && !_vanished { if !cond.wait(until: end) { return true } }
        return false
    }

    /// Shows `e` (nil: dark) and optionally fires trigger out, only while table `gen` is still the running one
    /// (a stopped table's thread must not touch the mirrors afterwards).
    private func display(_ e: DLPC900.LUTEntry?, _ gen: Int, fire: Bool = false) -> Bool {
        cond.lock(); defer { cond.unlock() }
        guard generation == gen, !_vanished else { return false }
        onDisplay?(e)
        if fire, let e { _shown.append(e); onTriggerOut?() }
        return true
    }

    private func sequence(_ table: [DLPC900.LUTEntry], passes: UInt32, generation gen: Int) {
        var pass: UInt32 = 0
        while passes == 0 || pass < passes {
            for (i, e) in table.enumerated() {
                if pass > 0 || i > 0 { guard display(e, gen, fire: pass == 0) else { return } }
                guard wait(us: e.exposureUs, gen) else { return }
                if e.clearAfter { guard display(nil, gen) else { return } }
                guard wait(us: e.darkUs, gen) else { return }
            }
            pass += 1
        }
        cond.lock()
        if generation == gen { _running = false; onDisplay?(nil) }
        cond.unlock()
    }

    /// A trigger-in pulse while running a table that waits for triggers: the next entry is shown.
    public func triggerIn() {
        cond.lock()
        guard _running, lutLength > 0, let e = lut[UInt16(triggerCount % lutLength)], e.waitForTrigger else {
            cond.unlock(); return
        }
        triggerCount += 1
        _shown.append(e)
        cond.unlock()
        onDisplay?(e)
    }
}
