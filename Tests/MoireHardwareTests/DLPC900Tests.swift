import Foundation
import MoireCore
import MoireHardware
import Testing

@Suite struct DLPC900Tests {
    @Test func startCommandHasTheControllersBytes() throws {
        let r = DLPC900.Message.write(DLPC900.patternStartStop, [2], sequence: 5).reports()
        #expect(r.count == 1 && r[0].count == 65)
        // report 0; flags: reply wanted; sequence; length 3 (command + 1 data byte); command 0x1A24 LSB first; start.
        #expect(Array(r[0][0..<7]) == [0x00, 0x40, 0x05, 0x03, 0x00, 0x24, 0x1A])
        #expect(r[0][7] == 2 && r[0][8...].allSatisfy { $0 == 0 })
        #expect(try DLPC900.Message.decode(r) == DLPC900.Message.write(DLPC900.patternStartStop, [2], sequence: 5))
        // A long message continues in further reports.
        let long = DLPC900.Message.write(0x1A2B, [UInt8](repeating: 7, count: 150), sequence: 1)
        let back = try DLPC900.Message.decode(long.reports())
        #expect(long.reports().count == 3 && back == long)
    }

    @Test func lutEntriesRoundTripEveryField() throws {
        let e = DLPC900.LUTEntry(index: 17, exposureUs: 0x0A_BCDE, bitDepth: 1, color: 7, waitForTrigger: true, darkUs: 0x01_0203,
                                 imageIndex: 0x5A3, bitPosition: 23, clearAfter: true, disableTriggerOut2: true)
        let b = e.encode()
        #expect(b.count == 12 && b[0] == 17 && Array(b[2...4]) == [0xDE, 0xBC, 0x0A])
        #expect(try DLPC900.LUTEntry.decode(b) == e)
    }

    @Test func thePeerRunsAConfiguredTableAndShowsEntriesPerTrigger() {
        let dmd = SimulatedDLPC900()
        func send(_ c: UInt16, _ d: [UInt8]) -> Bool { (try? DLPC900.Message.decode(dmd.handle(DLPC900.Message.write(c, d, sequence: 0).reports())))?.isNack == false }
        #expect(send(DLPC900.displayMode, [1]))
        #expect(!send(DLPC900.patternStartStop, [2]), "start without a table is refused")
        for i in 0..<3 { #expect(send(DLPC900.lutDefinition, DLPC900.LUTEntry(index: UInt16(i), exposureUs: 5000, waitForTrigger: true, imageIndex: 0, bitPosition: UInt8(i)).encode())) }
        #expect(send(DLPC900.lutConfigure, [3, 0, 0, 0, 0, 0]))
        #expect(send(DLPC900.patternStartStop, [2]) && dmd.running)
        for _ in 0..<4 { dmd.triggerIn() }
        #expect(dmd.shown.map(\.bitPosition) == [0, 1, 2, 0])
        #expect(!send(0x7777, []), "unknown commands are nacked")
        #expect(send(DLPC900.patternStartStop, [0]) && !dmd.running)
    }

    /// The decoders survive random and truncated bytes (fixed seed, 100 000 inputs each).
    @Test func decodersSurviveRandomAndTruncatedBytes() {
        var r = SimRandom(seed: 900)
        let valid = DLPC900.Message.write(DLPC900.lutDefinition, DLPC900.LUTEntry(index: 1, exposureUs: 10, waitForTrigger: false, imageIndex: 2, bitPosition: 3).encode(), sequence: 9).reports()[0]
        var refused = 0
        for i in 0..<100_000 {
            var bytes = i % 2 == 0 ? Array(valid.prefix(Int(r.next() % 65))) : valid
            if i % 2 == 1 { for _ in 0..<(1 + Int(r.next() % 6)) { bytes[Int(r.next() % 65)] = UInt8(truncatingIfNeeded: r.next()) } }
            if let m = try? DLPC900.Message.decode([bytes]) { _ = try? DLPC900.LUTEntry.decode(m.data) } else { refused += 1 }
            _ = try? DLPC900.LUTEntry.decode((0..<Int(r.next() % 16)).map { _ in UInt8(truncatingIfNeeded: r.next()) })
        }
        #expect(refused > 10_000)
    }
}
