import Foundation
import MoireCore
import MoireHardware
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
