import Foundation
import MoireCore

/// A DLPC900 controller's USB HID side, byte for byte, for tests: display mode, the pattern
/// look-up table (0x1A34 entries, 0x1A31 configuration), start/stop; each message answered with a
/// reply report (nack for unknown commands or bad data). It logs the patterns it would show, in
/// order, so a test can compare them with the frames' headers.
public final class SimulatedDLPC900: @unchecked Sendable {
    public private(set) var mode: UInt8 = 0
    public private(set) var lut: [UInt16: DLPC900.LUTEntry] = [:]
    public private(set) var lutLength = 0, repeatCount: UInt32 = 0
    public private(set) var running = false
    public private(set) var shown: [DLPC900.LUTEntry] = []

    public init() {}

    /// Handles one message (as reports) and returns the reply reports.
    public func handle(_ reports: [[UInt8]]) -> [[UInt8]] {
        guard let m = try? DLPC900.Message.decode(reports) else {
            return DLPC900.Message(flags: DLPC900.flagNack, sequence: 0, command: 0, data: []).reports()
        }
        var ok = true
        switch m.command {
        case DLPC900.displayMode: if m.data.count == 1, m.data[0] <= 3 { mode = m.data[0] } else { ok = false }
        case DLPC900.lutDefinition:
            if let e = try? DLPC900.LUTEntry.decode(m.data) { lut[e.index] = e } else { ok = false }
        case DLPC900.lutConfigure:
            if m.data.count == 6 {
                lutLength = Int(UInt16(m.data[0]) | UInt16(m.data[1]) << 8)
                repeatCount = m.data[2...5].reversed().reduce(0) { $0 << 8 | UInt32($1) }
                ok = (0..<lutLength).allSatisfy { lut[UInt16($0)] != nil }
            } else { ok = false }
        case DLPC900.patternStartStop:
            guard m.data.count == 1, m.data[0] <= 2 else { ok = false; break }
            if m.data[0] == 2 {
                // Starting needs a pattern mode and a configured table.
                if (mode == 1 || mode == 3) && lutLength > 0 { running = true } else { ok = false }
            } else {
                running = false  // stop or pause
            }
        default: ok = false
        }
        return DLPC900.Message(flags: ok ? 0 : DLPC900.flagNack, sequence: m.sequence, command: m.command, data: []).reports()
    }

    /// A trigger-in pulse while running: the next table entry is shown (logged).
    public func triggerIn() {
        guard running, lutLength > 0, let e = lut[UInt16(shown.count % lutLength)] else { return }
        shown.append(e)
    }
}
