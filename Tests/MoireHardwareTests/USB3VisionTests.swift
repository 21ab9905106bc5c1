import Foundation
import MoireCore
import MoireHardware
import Testing

@Suite struct U3VCodecTests {
    @Test func readMemCommandHasTheStandardsBytes() throws {
        let c = GenCPCommand.readMem(address: 0x1D8, count: 8, requestID: 7).encode()
        // "U3VC", flags 0x4000 (ack required), ReadMem 0x0800, 12 bytes of SCD, request 7; address, reserved, count.
        #expect(c == [0x55, 0x33, 0x56, 0x43, 0x00, 0x40, 0x00, 0x08, 0x0C, 0x00, 0x07, 0x00,
                      0xD8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00])
        let decoded = try GenCPCommand.decode(c)
        #expect(decoded == GenCPCommand.readMem(address: 0x1D8, count: 8, requestID: 7))
    }

    @Test func acknowledgesLeadersAndTrailersRoundTrip() throws {
        var scd: [UInt8] = []
        scd.append(contentsOf: [0, 0, 0xF4, 0x01])  // reserved, 500 ms
        let pending = GenCPAck(status: 0, commandID: U3V.pendingAck, requestID: 3, scd: scd)
        #expect(try GenCPAck.decode(pending.encode()) == pending && (try pending.pendingTimeoutMs()) == 500)
        let leader = U3VLeader(blockID: 41, timestampNs: 123_456_789, pixelFormat: 0x0110_0007, sizeX: 512, sizeY: 256, offsetX: 8, offsetY: 4)
        let lb = leader.encode()
        #expect(lb.count == 52 && Array(lb[0..<4]) == [0x55, 0x33, 0x56, 0x4C])
        #expect(try U3VLeader.decode(lb) == leader)
        let trailer = U3VTrailer(blockID: 41, validPayloadSize: 512 * 256 * 2, sizeY: 256)
        #expect(try U3VTrailer.decode(trailer.encode()) == trailer)
        #expect(try U3VTrailer.decode(U3VTrailer(blockID: 2, validPayloadSize: 10).encode()).sizeY == nil)
    }

    /// Every decoder survives random and truncated bytes (fixed seed, 100 000 inputs each): it decodes or throws.
    @Test func decodersSurviveRandomAndTruncatedBytes() {
        var r = SimRandom(seed: 2024)
        let valid: [[UInt8]] = [GenCPCommand.writeMem(address: 0x40, data: [1, 2, 3, 4], requestID: 9).encode(),
                                GenCPAck(status: 0, commandID: U3V.readMemAck, requestID: 9, scd: [1, 2, 3, 4]).encode(),
                                U3VLeader(blockID: 1, timestampNs: 2, pixelFormat: 3, sizeX: 4, sizeY: 5).encode(),
                                U3VTrailer(blockID: 1, validPayloadSize: 40, sizeY: 5).encode()]
        let decoders: [([UInt8]) throws -> Void] = [{ _ = try GenCPCommand.decode($0) }, { _ = try GenCPAck.decode($0) },
                                                    { _ = try U3VLeader.decode($0) }, { _ = try U3VTrailer.decode($0) }]
        for (k, decode) in decoders.enumerated() {
            var decoded = 0, refused = 0
            for i in 0..<100_000 {
                var bytes: [UInt8]
                switch i % 3 {
                case 0:  // a valid message cut short: must be refused
                    bytes = Array(valid[k].prefix(Int(r.next() % UInt64(valid[k].count))))
                case 1:  // a valid message with random bytes changed
                    bytes = valid[k]
                    for _ in 0..<(1 + Int(r.next() % 4)) { bytes[Int(r.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: r.next()) }
                default:  // the right prefix, then noise of any length
                    bytes = Array(valid[k].prefix(4)) + (0..<Int(r.next() % 80)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
                }
                do { try decode(bytes); decoded += 1 } catch { refused += 1
                    if i % 3 == 0 { continue }
                }
                if i % 3 == 0, (try? decode(bytes)) != nil { Issue.record("decoder \(k) accepted a truncated message of \(bytes.count) bytes") }
            }
            #expect(decoded + refused == 100_000 && refused > 30_000, "decoder \(k): \(decoded) decoded, \(refused) refused")
        }
    }
}

@Suite(.serialized) struct GenCPChannelTests {
    @Test func readsAndWritesRegistersThroughThePeer() throws {
        let peer = SimulatedU3VPeer()
        peer.setU64(U3V.ABRM.sbrmAddress, 0x1_0000)
        let ch = GenCPChannel(transport: peer, timeoutMs: 100)
        #expect(try ch.readU64(U3V.ABRM.sbrmAddress) == 0x1_0000)
        try ch.writeU32(0x2_0004, 0xDEAD_BEEF)
        let back = try ch.readU32(0x2_0004)
        #expect(peer.u32(0x2_0004) == 0xDEAD_BEEF && back == 0xDEAD_BEEF)
        // Request ids count up, one per transaction.
        #expect(peer.commands.map(\.requestID) == [1, 2, 3])
        // Reads longer than the acknowledge limit are split.
        ch.maxReadBytes = 16
        for i in 0..<40 { peer.memory[0x3000 + UInt64(i)] = UInt8(i) }
        #expect(try ch.readMem(address: 0x3000, count: 40) == (0..<40).map(UInt8.init))
        #expect(peer.commands.count == 6)
    }

    @Test func pendingAcknowledgesExtendTheTimeoutAsTheStandardSays() throws {
        let peer = SimulatedU3VPeer()
        peer.setU32(0x10, 42)
        let ch = GenCPChannel(transport: peer, timeoutMs: 60)
        // The answer comes after 400 ms: too late for the 60 ms response time…
        peer.answerDelayMs = 400
        #expect(throws: MoireError.self) { _ = try ch.readU32(0x10) }
        // …but in time when the device first announces, by a pending acknowledge, that it needs 1000 ms.
        peer.pendingBeforeAnswer = 1; peer.pendingTimeoutMs = 1000
        #expect(try ch.readU32(0x10) == 42)
        #expect(ch.pendingAcks == 1)
        // A pending acknowledge announcing too little time does not save a late answer.
        peer.pendingTimeoutMs = 80
        #expect(throws: MoireError.self) { _ = try ch.readU32(0x10) }
    }

    @Test func staleSilentFailingAndVanishedDevicesGiveClearErrors() throws {
        let peer = SimulatedU3VPeer()
        peer.setU32(0x10, 7)
        let ch = GenCPChannel(transport: peer, timeoutMs: 50)
        peer.staleFirst = true
        #expect(try ch.readU32(0x10) == 7)  // the stale acknowledge of an earlier request is skipped
        peer.staleFirst = false
        peer.failStatus = 0x8003
        do { _ = try ch.readU32(0x10); Issue.record("an error status was accepted") } catch let e as MoireError {
            #expect(e.kind == .hardware && "\(e)".contains("invalid address") && "\(e)".contains("ReadMem 0x10"))
        }
        peer.failStatus = 0
        peer.silent = true
        do { _ = try ch.readU32(0x10); Issue.record("silence was accepted") } catch let e as MoireError { #expect(e.kind == .deadline) }
        peer.silent = false
        peer.vanished = true
        do { _ = try ch.readU32(0x10); Issue.record("a vanished device answered") } catch let e as MoireError {
            #expect(e.kind == .hardware && "\(e)".contains("disconnected"))
        }
    }
}
