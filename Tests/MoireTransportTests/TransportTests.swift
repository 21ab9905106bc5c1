import Foundation
import MoireCore
import MoireTransport
import Testing

private func header(_ seq: Int, w: Int = 8, h: Int = 4, missing: Bool = false) -> FrameHeader {
    FrameHeader(
        run: "run1", seq: seq, index: seq, t: 0, channel: "gfp", c: 0, angle: 0, phase: seq % 3, z: 0,
        width: w, height: h, pixelSizeUm: 0.1, missing: missing)
}

@Suite(.serialized) struct RawBusTests {
    @Test func framesCrossWithoutCopyAndReturnToThePoolWhenEveryConsumerIsDone() throws {
        let pool = FramePool(slots: 4, bytes: 64)
        let bus = try RawBus()
        let a = try BusSubscriber(endpoint: bus.endpoint)
        let b = try BusSubscriber(endpoint: bus.endpoint)
        try bus.waitForSubscribers(2)
        let slot = try #require(pool.acquire())
        slot.withBytes { for i in 0..<64 { $0[i] = UInt8(i) } }
        try bus.publish(Frame(header: header(0), slot: slot))
        guard case .frame(let ha, let pa)? = try a.next(timeoutMs: 2000) else { Issue.record("a got nothing"); return }
        guard case .frame(_, let pb)? = try b.next(timeoutMs: 2000) else { Issue.record("b got nothing"); return }
        #expect(ha.seq == 0 && pa.count == 64)
        // Zero copy: both consumers see the pool's own buffer.
        #expect(pa.withUnsafeBytes { $0.baseAddress } == UnsafeRawPointer(pool.address(of: slot.index)))
        #expect(pb.withUnsafeBytes { $0.baseAddress } == UnsafeRawPointer(pool.address(of: slot.index)))
        #expect(pool.freeCount == 3)
        _ = consume pa
        #expect(pool.freeCount == 3)
        _ = consume pb
        // libzmq releases from its own thread; allow it a moment.
        var tries = 0
        while pool.freeCount != 4 && tries < 200 { usleep(1000); tries += 1 }
        #expect(pool.freeCount == 4)
    }

    @Test func missingFramesTravelAsHeadersWithEmptyPayload() throws {
        let bus = try RawBus()
        let s = try BusSubscriber(endpoint: bus.endpoint)
        try bus.waitForSubscribers(1)
        try bus.publish(Frame(header: header(3, missing: true), slot: nil))
        guard case .frame(let h, let p)? = try s.next(timeoutMs: 2000) else { Issue.record("nothing"); return }
        #expect(h.missing && h.seq == 3 && p.count == 0)
    }

    @Test func waitingForAbsentSubscribersTimesOut() throws {
        let bus = try RawBus()
        #expect(throws: MoireError.self) { try bus.waitForSubscribers(1, timeoutMs: 50) }
    }
}

@Suite struct WireTests {
    @Test func payloadSizeMustMatchHeader() throws {
        let json = try Wire.encode(header(1))
        #expect(throws: MoireError.self) { try Wire.decodeFrame(topic: "raw.gfp", header: json, payloadBytes: 10) }
        #expect(try Wire.decodeFrame(topic: "raw.gfp", header: json, payloadBytes: 64).seq == 1)
    }

    @Test func malformedHeadersGiveClearErrors() throws {
        for bad in ["", "{", "{\"seq\": 1}", "[1,2]", String(repeating: "x", count: 1000)] {
            do {
                _ = try Wire.decodeFrame(topic: "raw.x", header: Data(bad.utf8), payloadBytes: 0);
                Issue.record("accepted \(bad)")
            } catch let e as MoireError {
                #expect(e.kind == .format)
                #expect(e.message.contains("malformed frame header"))
            }
        }
        var h = header(1); h.width = -3
        #expect(throws: MoireError.self) {
            try Wire.decodeFrame(topic: "raw.gfp", header: Wire.encode(h), payloadBytes: 0)
        }
    }

    @Test func subscriberSkipsAndCountsMalformedMessages() throws {
        let ctx = ZMQContext()
        let pub = try ZMQSocket(ctx, type: .pub)
        let ep = "inproc://wire-bad-\(UUID().uuidString)"
        try pub.bind(ep)
        let sub = try BusSubscriber(context: ctx, endpoint: ep)
        usleep(50_000)
        try pub.send([.text("raw.gfp"), .text("{not json"), .bytes(Data())])
        try pub.send([.text("only-one-part")])
        try pub.send([.text("raw.gfp"), .bytes(Wire.encode(header(2))), .bytes(Data(count: 64))])
        guard case .frame(let h, _)? = try sub.next(timeoutMs: 2000) else { Issue.record("no good frame"); return }
        #expect(h.seq == 2)
        #expect(sub.malformed == 2)
    }
}

@Suite(.serialized) struct PublisherTests {
    @Test func lateSubscriberReceivesStartFirstThenContiguousFrames() throws {
        let pub = try ResultPublisher(endpoint: "tcp://127.0.0.1:*")
        let start = RunStart(
            run: "r42", protocolName: "p", protocolFile: "/p.yaml", mode: "sim2d", rig: "rig", objectiveNA: 1.49,
            magnification: 100, channels: [], shape: ["t": 1], pixel: .uint16, pixelSizeUm: 0.065, startedNs: 1)
        try pub.publishStart(start)
        let payload = [UInt8](repeating: 1, count: 64)
        for i in 0..<5 { try payload.withUnsafeBytes { try pub.publish(header: header(i), payload: $0) } }
        // Joins after start and five frames.
        let late = try BusSubscriber(endpoint: pub.endpoint)
        var first: BusItem?
        for i in 5..<400 {
            try payload.withUnsafeBytes { try pub.publish(header: header(i), payload: $0) }
            if let item = try late.next(timeoutMs: 5) { first = item; break }
        }
        guard case .run(_, let json)? = first else {
            Issue.record("late subscriber's first message was not start"); return
        }
        #expect(try JSONDecoder().decode(RunStart.self, from: json).run == "r42")
        for i in 1000..<1010 { try payload.withUnsafeBytes { try pub.publish(header: header(i), payload: $0) } }
        var seqs: [Int] = []
        while let item = try late.next(timeoutMs: 500) {
            if case .frame(let h, _) = item { seqs.append(h.seq) }
        }
        #expect(seqs.suffix(10) == Array(1000..<1010))
        let before = seqs.dropLast(10)
        #expect(zip(before.dropFirst(), before).allSatisfy { $0 == $1 + 1 })
        #expect(pub.subscriptions >= 1)
    }

    @Test func bindingBeyondLoopbackIsRefusedWithoutKeys() {
        #expect(throws: MoireError.self) { try ResultPublisher(endpoint: "tcp://0.0.0.0:5999") }
        #expect(throws: MoireError.self) { try ControlServer(endpoint: "tcp://10.1.2.3:5999") }
    }
}

@Suite struct ControlTests {
    @Test func requestsAndMalformedRequestsGetReplies() throws {
        let server = try ControlServer(endpoint: privateControlEndpoint())
        let t = Thread { server.serve { req in ControlReply(ok: req.cmd == "status", state: "idle", frames: 3) } }
        t.start()
        defer { server.stop() }
        let r = try #require(try ControlClient.call(server.endpoint, ControlRequest(cmd: "status")))
        #expect(r.ok && r.state == "idle" && r.frames == 3)
        let s = try ZMQSocket(type: .req)
        try s.connect(server.endpoint)
        try s.send([.text("this is not json")])
        // (the owner's own raw socket: refused only for its content)
        #expect(try s.poll(timeoutMs: 2000))
        let reply = try JSONDecoder().decode(ControlReply.self, from: s.receive()[0].data)
        #expect(!reply.ok && reply.error?.contains("malformed request") == true)
    }

    @Test func noDaemonMeansNil() throws {
        let nobody = "inproc://nobody-\(UUID().uuidString)"
        #expect(try ControlClient.call(nobody, ControlRequest(cmd: "ping"), timeoutMs: 100, pin: .inProcess) == nil)
    }
}

/// `.shared` parts and `sharedData` move large bytes without copying them and small ones by copy;
/// either way the receiver reads exactly what was sent, also after the message and the sender's
/// Data are gone.
@Suite struct SharedPartTests {
    @Test func sharedPartsArriveIntactLargeAndSmall() throws {
        let endpoint = "inproc://shared-parts-\(UUID().uuidString)"
        let receiver = try ZMQSocket(.shared, type: .pull)
        try receiver.bind(endpoint)
        let sender = try ZMQSocket(.shared, type: .push)
        try sender.connect(endpoint)
        var large = Data(count: 3 * 1024 * 1024 + 5)
        large.withUnsafeMutableBytes { bytes in
            for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }
        }
        let small = Data("sim3d".utf8)
        let expected = [large, small, Data()]
        do {
            var sent = large
            try sender.send([.shared(sent), .shared(small), .shared(Data())])
            // The sender's copy changes after sending: the message keeps the bytes it was given.
            sent[0] ^= 0xFF
        }
        let received = try receiver.receive().map(\.sharedData)
        #expect(received.count == 3)
        #expect(received == expected)
    }
}
