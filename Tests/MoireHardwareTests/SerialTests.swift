import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
import MoireTesting
import Testing

@Suite(.serialized) struct SerialControllerTests {
    @Test func commandsReachTheControllerOverAPseudoTerminalAndRepliesComeBack() throws {
        let peer = try SimulatedSerialController()
        defer { peer.stop() }
        let port = try SerialPort(path: peer.pty.slavePath, baud: 115_200)
        let ch = SerialLineChannel(port: port, timeoutMs: 500)
        #expect(try ch.query("*").hasPrefix("ARC TRIGGERSCOPE"))
        #expect(try ch.query("DAC1,32768") == "!DAC1,32768")
        #expect(try ch.query("TTL3,1") == "!TTL3,1")
        #expect(try ch.query("TTL3,0") == "!TTL3,0")
        #expect(try ch.query("DAC99,1") == "?")
        let s = peer.state()
        #expect(s.dac[1] == 32768 && s.ttl[3] == false && s.log == ["DAC1=32768", "TTL3=1", "TTL3=0"])
    }

    @Test func silenceGarbageAndAMissingPortGiveClearErrors() throws {
        let peer = try SimulatedSerialController()
        let port = try SerialPort(path: peer.pty.slavePath)
        let ch = SerialLineChannel(port: port, timeoutMs: 100)
        peer.silent = true
        do { _ = try ch.query("TTL1,1"); Issue.record("silence accepted") } catch let e as MoireError {
            #expect(e.kind == .deadline && "\(e)".contains("TTL1,1"))
        }
        peer.silent = false
        peer.garbage = true
        do { _ = try ch.query("TTL1,1"); Issue.record("garbage accepted") } catch let e as MoireError { #expect(e.kind == .format) }
        peer.stop()
        #expect(throws: MoireError.self) { _ = try SerialPort(path: "/dev/does-not-exist") }
    }
}

/// The serial-ascii drivers: a profile's templates, through a real pseudo-terminal, to the peer.
@Suite(.serialized) struct SerialDriverTests {
    static func profile(_ file: String) throws -> DeviceProfile {
        try DeviceProfile.load(file: Fixtures.path("hardware-profiles/\(file)"))
    }

    @Test func templatesFillMatchAndMapCountsBothWays() throws {
        let c = SerialCommand(send: "DAC{line},{counts}", reply: "!DAC{line},{counts}", from: -10...10, to: 0...65535)
        #expect(c.counts(-10) == 0 && c.counts(10) == 65535 && c.counts(0) == 32768 && c.counts(99) == 65535)
        #expect(abs(c.value(counts: 49151)! - 5.0) < 1e-3)
        #expect(SerialCommand.fill(c.send, ["line": "1", "counts": "42"]) == "DAC1,42")
        #expect(c.match("DAC1,42", fixed: ["line": "1"]) == ["counts": 42])
        #expect(c.match("DAC2,42", fixed: ["line": "1"]) == nil && c.match("DAC1,", fixed: ["line": "1"]) == nil)
        #expect(c.match("DAC1,42x", fixed: ["line": "1"]) == nil)
        #expect(SerialCommand.replyMatches("ARC TRIGGERSCOPE 16", expected: "ARC TRIGGERSCOPE*"))
        #expect(!SerialCommand.replyMatches("!DAC1,4", expected: "!DAC1,42"))
    }

    @Test func galvoPiezoAndLaserCommandsReachTheirLines() throws {
        let peer = try SimulatedSerialController()
        defer { peer.stop() }
        let galvo = try Self.profile("scanners/triggerscope-galvo.yaml"), piezo = try Self.profile("stages/triggerscope-piezo.yaml")
        let laser = try Self.profile("lasers/triggerscope-laser-488.yaml")
        let ctl = try SerialController(path: peer.pty.slavePath, profile: galvo.serial!)
        let sc = SerialScanner(name: "galvo", profile: galvo.scanner!, serial: galvo.serial!, controller: ctl)
        let st = SerialStage(name: "z", profile: piezo.stage!, serial: piezo.serial!, controller: ctl)
        let l = SerialLaser(name: "l488", profile: laser.laser!, serial: laser.serial!, controller: ctl)
        try sc.set(volts: 5)
        try st.move(toUm: 100)
        try l.setPower(mW: 100)
        try l.setEnabled(true)
        var s = peer.state()
        #expect(s.dac[1] == 49151 && s.dac[2] == 65535 && s.dac[3] == 40960 && s.ttl[1] == true)
        #expect(l.isEmitting && sc.volts == 5 && st.positionUm == 100)
        #expect(throws: MoireError.self) { try sc.set(volts: 11) }
        l.safe(); sc.park(); st.park()
        s = peer.state()
        #expect(s.ttl[1] == false && s.dac[1] == 32768 && s.dac[2] == 49152 && !l.isEnabled && sc.isParked)
    }

    @Test func aWaveformIsSteppedByTriggerPulses() throws {
        let peer = try SimulatedSerialController()
        defer { peer.stop() }
        let galvo = try Self.profile("scanners/triggerscope-galvo.yaml")
        let sc = SerialScanner(name: "galvo", profile: galvo.scanner!, serial: galvo.serial!,
                               controller: try SerialController(path: peer.pty.slavePath, profile: galvo.serial!))
        try sc.loadWaveform(volts: [-10, 0, 10])
        for _ in 0..<4 { peer.triggerIn() }
        #expect(peer.state().log.suffix(5) == ["ARM1=3", "DAC1=0", "DAC1=32768", "DAC1=65535", "DAC1=0"])
        #expect(throws: MoireError.self) { try sc.loadWaveform(volts: [0, 12]) }
    }

    @Test func aWrongControllerAWrongReplyAndSilenceAreErrorsNamingPortAndCommand() throws {
        let peer = try SimulatedSerialController()
        defer { peer.stop() }
        var galvo = try Self.profile("scanners/triggerscope-galvo.yaml").serial!
        galvo.identify = SerialCommand(send: "*", reply: "ASI TIGER*")
        do { _ = try SerialController(path: peer.pty.slavePath, profile: galvo); Issue.record("a foreign controller accepted") } catch let e as MoireError {
            #expect("\(e)".contains("ASI TIGER") && "\(e)".contains(peer.pty.slavePath))
        }
        let p = try Self.profile("scanners/triggerscope-galvo.yaml")
        var s = p.serial!
        s.commands["set"]!.reply = "OK"
        let sc = SerialScanner(name: "galvo", profile: p.scanner!, serial: s, controller: try SerialController(path: peer.pty.slavePath, profile: s))
        do { try sc.set(volts: 1); Issue.record("a wrong reply accepted") } catch let e as MoireError {
            #expect(e.kind == .hardware && "\(e)".contains("DAC1,") && "\(e)".contains("galvo"))
        }
        peer.silent = true
        do { try sc.set(volts: 1); Issue.record("silence accepted") } catch let e as MoireError { #expect(e.kind == .deadline) }
    }

    @Test func anUnpluggedControllerIsAHangUpAndSafeNeverThrows() throws {
        let peer = try SimulatedSerialController()
        let laser = try Self.profile("lasers/triggerscope-laser-488.yaml")
        let l = SerialLaser(name: "l488", profile: laser.laser!, serial: laser.serial!,
                            controller: try SerialController(path: peer.pty.slavePath, profile: laser.serial!))
        try l.setEnabled(true)
        peer.vanish()
        do { try l.setEnabled(true); Issue.record("a vanished controller answered") } catch let e as MoireError {
            #expect(e.kind == .hardware || e.kind == .deadline, "\(e)")
        }
        l.safe()  // commanded, cannot be confirmed; never throws
        #expect(!l.isEnabled)
    }

    /// The reply decoder and the reply matcher survive random and truncated bytes (fixed seed, 100 000 inputs).
    @Test func replyDecodingSurvivesRandomAndTruncatedBytes() {
        var r = SimRandom(seed: 232)
        var decoder = SerialLineDecoder(maxReply: 64)
        let cmd = SerialCommand(send: "DAC{line},{counts}", reply: "!DAC{line},{counts}", from: -10...10, to: 0...65535)
        let valid = Array("!DAC1,32768\r\n".utf8)
        var lines = 0, refused = 0
        for i in 0..<100_000 {
            var bytes: [UInt8]
            switch i % 3 {
            case 0: bytes = Array(valid.prefix(Int(r.next() % UInt64(valid.count + 1))))
            case 1: bytes = valid; for _ in 0..<(1 + Int(r.next() % 4)) { bytes[Int(r.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: r.next()) }
            default: bytes = (0..<Int(r.next() % 80)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            }
            decoder.push(bytes)
            while true {
                do {
                    guard let line = try decoder.next() else { break }
                    lines += 1
                    _ = SerialCommand.replyMatches(line, expected: "!DAC1,32768")
                    _ = cmd.match(line, fixed: ["line": "1"])
                } catch { refused += 1 }
            }
        }
        print("serial reply fuzz: \(lines) lines decoded, \(refused) refused")
        #expect(lines > 2_000 && refused > 10_000)
        // A clean reply still decodes after all that.
        var clean = SerialLineDecoder()
        clean.push(valid)
        #expect((try? clean.next()) == "!DAC1,32768")
    }
}
