import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
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
    // Sendable by hand: every field under `lock`.
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
        #expect(try m.waitSequence(timeoutMs: 60_000))  // a hang watchdog, not a speed check
        let took = Date().timeIntervalSince(t0)
        #expect(took >= 9 * 0.003, "9 × (2 ms + 1 ms dark) on the controller's clock; took \(took) s")
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

    /// The grating's Fourier coefficient at a frequency (cycles per mirror): magnitude and phase.
    static func coefficient(_ plane: [UInt8], width: Int, height: Int, fx: Double, fy: Double) -> (mag: Double, phase: Double) {
        var re = 0.0, im = 0.0
        for y in 0..<height { for x in 0..<width where plane[y * width + x] != 0 {
            let a = 2 * Double.pi * (fx * Double(x) + fy * Double(y))
            re += cos(a); im -= sin(a)
        } }
        let n = Double(width * height)
        return (hypot(re, im) / n, atan2(im, re))
    }

    @Test func erleRoundTripsImagesAndCompressesGratings() throws {
        var r = SimRandom(seed: 77)
        for (w, h) in [(1, 1), (17, 5), (200, 3)] {
            let noise = (0..<(w * h)).map { _ in UInt32(truncatingIfNeeded: r.next()) & 0xFF_FFFF }
            #expect(try DMDPatterns.decodeERLE(DMDPatterns.encodeERLE(noise, width: w, height: h), width: w, height: h) == noise)
        }
        var p = try Self.profile()
        p.dmdGeometry = DMDGeometry(width: 240, height: 135, sampleUmPerMirror: 0.03, upload: true)
        let images = DMDPatterns.images(for: p, geometry: p.dmdGeometry!)
        let img = try #require(images[1])
        let encoded = DMDPatterns.encodeERLE(img, width: 240, height: 135)
        // One run (2-byte length + pixel), 134 lines copied from the line above (4 bytes each), the end mark.
        #expect(encoded.count == 5 + 134 * 4 + 3, "\(encoded.count) bytes for 97 200 uncompressed")
        #expect(try DMDPatterns.parse(DMDPatterns.header(width: 240, height: 135, encodedBytes: encoded.count) + encoded).pixels == img)
    }

    @Test func generatedPatternsAreUploadedAndCarryEachPatternsWaveVectorAndPhase() throws {
        let peer = SimulatedDLPC900()
        var p = try Self.profile()
        let s = 0.03
        p.dmdGeometry = DMDGeometry(width: 240, height: 135, sampleUmPerMirror: s, upload: true)
        let m = try DLPC900Modulator(name: "dmd", profile: p, transport: peer)
        #expect(peer.mode == 3 && peer.uploadError == nil && Set(peer.uploaded.keys) == [0, 1])
        #expect(m.uploadedBytes.keys.sorted() == [0, 1])
        #expect(peer.bitPlane(image: 1, bit: 0)?.allSatisfy { $0 == 1 } == true, "dmd_uniform: all mirrors on")
        let set = try #require(p.patternSet(named: "sim488"))
        var phases: [Double] = []
        for ph in 0..<3 {
            let spec = try #require(set.pattern(angle: 1, phase: ph))
            let plane = try #require(peer.bitPlane(image: spec.dmd!.image, bit: spec.dmd!.bit))
            let at = Self.coefficient(plane, width: 240, height: 135, fx: spec.kx * s, fy: spec.ky * s)
            let off = Self.coefficient(plane, width: 240, height: 135, fx: spec.kx * s * 0.8, fy: spec.ky * s * 0.8)
            #expect(at.mag > 0.25 && at.mag > 10 * off.mag, "a square grating's fundamental (2/π·½ ≈ 0.32) at the pattern's k: \(at.mag) vs \(off.mag)")
            phases.append(at.phase)
        }
        for k in 1..<3 {
            var d = phases[k] - phases[0] - 2 * Double.pi / 3 * Double(k)
            d = atan2(sin(d), cos(d))
            #expect(abs(d) < 0.1, "phase step \(k): off by \(d) rad")
        }
        try m.show(pattern: 4)
        #expect(peer.running)
    }

    @Test func aBrokenUploadIsReportedByValidation() throws {
        let peer = SimulatedDLPC900()
        let m = try DLPC900Modulator(name: "dmd", profile: Self.profile(), transport: peer)
        // An image whose data does not decode (a header, then garbage).
        _ = peer.handle(DLPC900.Message.write(DLPC900.patternLoadInit, [0, 0, 52, 0, 0, 0], sequence: 1).reports())
        _ = peer.handle(DLPC900.Message.write(DLPC900.patternLoadData, [52, 0] + DMDPatterns.header(width: 4, height: 1, encodedBytes: 4) + [9, 9, 9, 9], sequence: 2).reports())
        #expect(peer.uploadError != nil)
        do { try m.show(pattern: 0); Issue.record("a broken upload validated") } catch let e as MoireError { #expect("\(e)".contains("validation")) }
    }

    /// The image decoders survive random and truncated bytes (fixed seed, 100 000 inputs).
    @Test func imageDecodersSurviveRandomAndTruncatedBytes() {
        var r = SimRandom(seed: 2048)
        let good = DMDPatterns.encodeERLE((0..<64).map { UInt32($0 % 5) }, width: 16, height: 4)
        var refused = 0
        for i in 0..<100_000 {
            var b: [UInt8]
            switch i % 3 {
            case 0: b = Array(good.prefix(Int(r.next() % UInt64(good.count + 1))))
            case 1: b = good; for _ in 0..<(1 + Int(r.next() % 4)) { b[Int(r.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: r.next()) }
            default: b = (0..<Int(r.next() % 64)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            }
            if (try? DMDPatterns.decodeERLE(b, width: 16, height: 4)) == nil { refused += 1 }
            if i % 10 == 0, (try? DMDPatterns.parse(DMDPatterns.header(width: 16, height: 4, encodedBytes: b.count) + b)) == nil { refused += 0 }
        }
        #expect(refused > 60_000)
    }
}
