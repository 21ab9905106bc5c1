import Foundation
import MoireCore
import MoireConfig
import MoireHardware
import MoireSimulation
import MoireTesting
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

@Suite struct U3VStreamTests {
    func image(_ id: Int, _ w: Int = 64, _ h: Int = 32) -> [UInt16] { (0..<(w * h)).map { UInt16(truncatingIfNeeded: $0 * 7 + id * 1000) } }

    @Test func imagesAreAssembledAndGapsAndLostTrailersAreMissingFrames() throws {
        let dev = SimulatedU3VStream()
        dev.transferBytes = 1000  // several payload transfers per image
        let rx = U3VStreamReceiver(transport: dev)
        dev.send(blockID: 0, width: 64, height: 32, pixels: image(0))
        dev.send(blockID: 1, width: 64, height: 32, pixels: image(1), skip: true)          // lost entirely
        dev.send(blockID: 2, width: 64, height: 32, pixels: image(2), dropTrailer: true)   // trailer lost
        dev.send(blockID: 3, width: 64, height: 32, pixels: image(3))
        var got: [U3VBlock] = []
        while let b = try rx.next(timeoutMs: 50) { got.append(b) }
        #expect(got.count == 4)
        guard got.count == 4 else { return }
        if case .image(let id, let l, let p) = got[0] {
            #expect(id == 0 && l.sizeX == 64 && l.sizeY == 32)
            let px = stride(from: 0, to: p.count, by: 2).map { UInt16(p[$0]) | UInt16(p[$0 + 1]) << 8 }
            #expect(px == image(0))
        } else { Issue.record("block 0 is not an image: \(got[0])") }
        #expect(got[1] == .missing(blockID: 1, reason: "block id gap"))
        #expect(got[2] == .missing(blockID: 2, reason: "trailer missing"))
        if case .image(let id, _, _) = got[3] { #expect(id == 3) } else { Issue.record("block 3 is not an image") }
    }

    @Test func garbageAndShortPayloadsDoNotCrashAndAreCounted() throws {
        let dev = SimulatedU3VStream()
        let rx = U3VStreamReceiver(transport: dev)
        var r = SimRandom(seed: 5)
        for _ in 0..<200 { dev.sendRaw((0..<Int(r.next() % 64)).map { _ in UInt8(truncatingIfNeeded: r.next()) }) }
        dev.send(blockID: 0, width: 16, height: 16, pixels: image(0, 16, 16))
        // A block whose payload is short: the trailer's valid size disagrees with the leader's image.
        dev.sendRaw(U3VLeader(blockID: 1, timestampNs: 0, pixelFormat: 0x0110_0007, sizeX: 16, sizeY: 16).encode())
        dev.sendRaw([UInt8](repeating: 1, count: 100))
        dev.sendRaw(U3VTrailer(blockID: 1, validPayloadSize: 100).encode())
        // A leader announcing an impossible image (2³²−1 square, 8 bytes per pixel): refused, no overflow, no huge allocation.
        dev.sendRaw(U3VLeader(blockID: 2, timestampNs: 0, pixelFormat: 0x0140_0000, sizeX: .max, sizeY: .max).encode())
        dev.sendRaw([UInt8](repeating: 1, count: 100))
        dev.sendRaw(U3VTrailer(blockID: 2, validPayloadSize: 100).encode())
        var got: [U3VBlock] = []
        while let b = try rx.next(timeoutMs: 50) { got.append(b) }
        #expect(rx.malformed > 0)
        #expect(got.count == 3)
        if got.count == 3, case .missing(let id, _) = got[2] { #expect(id == 2) } else { Issue.record("the impossible block was not missing") }
        if got.count >= 2 {
            if case .image(let id, _, _) = got[0] { #expect(id == 0) } else { Issue.record("not an image: \(got[0])") }
            if case .missing(let id, let why) = got[1] { #expect(id == 1 && why.contains("512 expected")) } else { Issue.record("not missing: \(got[1])") }
        }
        dev.vanished = true
        #expect(throws: MoireError.self) { _ = try rx.next(timeoutMs: 10) }
    }
}

@Suite(.serialized) struct USB3VisionCameraTests {
    func profile() throws -> CameraProfile {
        let p = try DeviceProfile.load(file: Fixtures.path("hardware-profiles/cameras/u3v-generic-scmos.yaml"))
        return try #require(p.camera)
    }

    @Test func theCamerasGenICamFileMustBeTheOneTheRegisterTableCameFrom() throws {
        var prof = try profile()
        let sim = SimulatedU3VCamera(profile: prof)
        let expected = SHA256.hex(Array(SimulatedU3VCamera.genicamXML(registers: prof.registers).utf8))
        print("simulated camera GenICam file SHA-256: \(expected)")
        #expect(prof.genicamXMLSHA256 == expected, "the shipped profile records the simulated camera's file")
        let cam = try USB3VisionCamera(name: "cam", profile: prof, control: sim.control, stream: sim.stream)
        #expect(cam.genicamSHA256 == expected)
        // Another camera's file: refused before anything is written.
        prof.genicamXMLSHA256 = String(repeating: "ab", count: 32)
        do { _ = try USB3VisionCamera(name: "cam", profile: prof, control: sim.control, stream: sim.stream); Issue.record("accepted") } catch let e as MoireError {
            #expect(e.kind == .config && e.message.contains("not the one the profile's register table came from"))
        }
        // A profile that records no hash is accepted.
        prof.genicamXMLSHA256 = nil
        #expect(try USB3VisionCamera(name: "cam", profile: prof, control: sim.control, stream: sim.stream).genicamSHA256 == expected)
    }

    @Test func theDriverConfiguresStreamsAndStopsThroughTheByteProtocol() throws {
        let prof = try profile()
        #expect(prof.registers.count == 9 && prof.registers["ExposureTime"]?.kind == .float32)
        let sim = SimulatedU3VCamera(profile: prof)
        sim.dropBlocks = [2]
        let cam = try USB3VisionCamera(name: "cam", profile: prof, control: sim.control, stream: sim.stream)
        try cam.configure(CameraSettings(width: 64, height: 32, exposureMs: 5, trigger: .software))
        #expect(sim.control.u32(0x30204) == 64 && sim.control.u32(0x30224) == 32 && sim.control.u32(0x30504) == 1)
        #expect(Float(bitPattern: sim.control.u32(0x30404)) == 5000)  // 5 ms as µs
        let pool = FramePool(slots: 4, bytes: 64 * 32 * 2)
        try cam.start(pool: pool)
        #expect(sim.control.u32(SimulatedU3VCamera.sirm + U3V.SIRM.control) == 1)
        #expect(sim.control.u32(SimulatedU3VCamera.sirm + U3V.SIRM.payloadTransferSize) == 64 * 32 * 2)
        var ids: [Int] = []
        for _ in 0..<4 {
            try cam.trigger()
            if let f = try cam.nextFrame(timeoutMs: 200) {
                ids.append(f.frameID)
                let first: UInt16 = f.slot!.withBytes { $0.load(as: UInt16.self) }
                #expect(first == UInt16(100 + f.frameID * 10) && f.width == 64 && f.height == 32)
                f.slot!.release()
            }
        }
        // Block 2 never came: the frame ids skip it, and the exposure counter still counts it.
        #expect(ids == [0, 1, 3] && cam.exposedCount == 4)
        cam.stop()
        #expect(sim.control.u32(SimulatedU3VCamera.sirm + U3V.SIRM.control) == 0 && !cam.isAcquiring)
        #expect(sim.control.commands.contains { $0.commandID == U3V.writeMemCmd && $0.scd.prefix(8) == [0x24, 0x07, 0x03, 0, 0, 0, 0, 0] })
    }

    @Test func unpluggingMidStreamIsAClearErrorAndAProfileWithoutFeaturesIsRefused() throws {
        let prof = try profile()
        let sim = SimulatedU3VCamera(profile: prof)
        let cam = try USB3VisionCamera(name: "cam", profile: prof, control: sim.control, stream: sim.stream)
        try cam.configure(CameraSettings(width: 32, height: 16, exposureMs: 1, trigger: .software))
        try cam.start(pool: FramePool(slots: 2, bytes: 32 * 16 * 2))
        sim.stream.vanished = true; sim.control.vanished = true
        do { _ = try cam.nextFrame(timeoutMs: 100); Issue.record("a vanished camera delivered") } catch let e as MoireError {
            #expect(e.kind == .hardware && "\(e)".contains("disconnected"))
        }
        cam.stop()  // never throws, even with the device gone
        var bare = prof
        bare.registers["TriggerSoftware"] = nil
        do { _ = try USB3VisionCamera(name: "cam", profile: bare, control: SimulatedU3VCamera(profile: bare).control, stream: sim.stream)
             Issue.record("accepted") } catch let e as MoireError { #expect(e.kind == .config && "\(e)".contains("TriggerSoftware")) }
    }
}
