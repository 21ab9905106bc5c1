import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireTesting
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

    static func profile() throws -> ModulatorProfile {
        try #require(DeviceProfile.load(file: Fixtures.path("hardware-profiles/modulators/ti-dlpc900.yaml")).modulator)
    }

    /// A thread-safe record of what the peer's mirrors showed and how often it fired trigger out.
    final class Wires: @unchecked Sendable {
        let lock = NSLock()
        var shown: [DLPC900.LUTEntry?] = []
        var pulses = 0
        func attach(_ d: SimulatedDLPC900) {
            d.onDisplay = { [self] e in lock.lock(); shown.append(e); lock.unlock() }
            d.onTriggerOut = { [self] in lock.lock(); pulses += 1; lock.unlock() }
        }
        var state: ([DLPC900.LUTEntry?], Int) { lock.lock(); defer { lock.unlock() }; return (shown, pulses) }
    }

    @Test func theDriverShowsAPatternByItsDMDImage() throws {
        let peer = SimulatedDLPC900(), wires = Wires()
        wires.attach(peer)
        let p = try Self.profile()
        let m = try DLPC900Modulator(name: "dmd", profile: p, transport: peer)
        #expect(peer.triggerOutConfig == [0, 0, 0, 0, 0] && peer.triggerInConfig == [0, 0, 0], "triggers configured when the driver opens")
        try m.show(pattern: 4)
        #expect(peer.running && !m.isIdle && peer.mode == 1)
        let want = try #require(p.pattern(index: 4)?.dmd)
        let first = try #require(wires.state.0.first ?? nil)
        #expect(Int(first.imageIndex) == want.image && Int(first.bitPosition) == want.bit)
        try m.show(pattern: -1)
        let last = try #require(wires.state.0.last ?? nil)
        #expect(Int(last.imageIndex) == p.uniformDMD!.image && Int(last.bitPosition) == p.uniformDMD!.bit)
        m.idle()
        #expect(!peer.running && m.isIdle)
        #expect(throws: MoireError.self) { try m.show(pattern: 999) }
    }

    @Test func anUploadedSequenceRunsOnTheControllersClockWithATriggerPerPattern() throws {
        let peer = SimulatedDLPC900(), wires = Wires()
        wires.attach(peer)
        let p = try Self.profile()
        let m = try DLPC900Modulator(name: "dmd", profile: p, transport: peer)
        let steps = (0..<9).map { SequenceStep(pattern: $0, laser: "l488", exposureMs: 2, readoutMs: 1) }
        try m.upload(steps)
        #expect(peer.lutLength == 9 && peer.repeatCount == 1)
        #expect(try DLPC900.LUTEntry.decode(peer.lut[3]!.encode()).exposureUs == 2000)
        let camProfile = try #require(DeviceProfile.load(file: Fixtures.path("sim-hardware/profiles/camera-sim-scmos.yaml")).camera)
        let cam = SimulatedCamera(name: "c", profile: camProfile, world: SimWorld(), specimen: nil,
                                  optics: Optics(objectiveNA: 1, magnification: 100, immersionIndex: 1.5), clock: RealClock())
        let t0 = Date()
        try m.startSequence(camera: cam, lasers: [:])
        #expect(try m.waitSequence(timeoutMs: 2000))
        let took = Date().timeIntervalSince(t0)
        #expect(took >= 9 * 0.003 && took < 1.0, "9 × (2 ms + 1 ms dark) on the controller's clock; took \(took) s")
        #expect(wires.state.1 == 9 && peer.shown.map { Int($0.bitPosition) } == steps.map { p.pattern(index: $0.pattern)!.dmd!.bit })
        #expect(!peer.running)
    }

    @Test func refusalsSilenceAndUnplugAreClearErrors() throws {
        let peer = SimulatedDLPC900()
        let p = try Self.profile()
        let m = try DLPC900Modulator(name: "dmd", profile: p, transport: peer)
        // 50 µs is below the controller's 1-bit minimum: its validation refuses the table.
        do { try m.upload([SequenceStep(pattern: 0, laser: nil, exposureMs: 0.05, readoutMs: 0)]); Issue.record("too short accepted") } catch let e as MoireError {
            #expect(e.kind == .hardware && "\(e)".contains("validation") && "\(e)".contains("dmd"))
        }
        #expect(throws: MoireError.self) { try m.upload(Array(repeating: SequenceStep(pattern: 0, laser: nil, exposureMs: 1, readoutMs: 0), count: 401)) }
        peer.vanished = true
        do { try m.show(pattern: 0); Issue.record("a vanished controller accepted") } catch let e as MoireError {
            #expect("\(e)".contains("disconnected") && "\(e)".contains("dmd"))
        }
        m.idle()  // never throws, even with the controller gone
        #expect(throws: MoireError.self) { try DLPC900Modulator(name: "dmd2", profile: p, transport: peer) }
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
