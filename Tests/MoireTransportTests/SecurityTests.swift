import Foundation
import MoireCore
import MoireTransport
import Testing

/// An ipc control endpoint in a fresh directory that only this user may enter.
func privateControlEndpoint() -> String {
    let directory = NSTemporaryDirectory() + "moire-control-\(UUID().uuidString.prefix(8))"
    mkdir(directory, 0o700)
    return "ipc://\(directory)/control.sock"
}

/// Serves `server` on a thread of its own with a handler that answers every request; stop() ends it.
private func serveEcho(_ server: ControlServer) {
    let t = Thread { server.serve { req in ControlReply(ok: true, state: "idle", run: req.cmd) } }
    t.start()
}

private func mode(of path: String) -> mode_t {
    var info = stat()
    stat(path, &info)
    return info.st_mode & 0o777
}

/// The control plane's access rules over real sockets (the security issue's S1/S2 and its hostile-client suite).
@Suite(.serialized) struct ControlAccessTests {
    @Test func theControlSocketIsTheOwnersAlone() throws {
        let endpoint = privateControlEndpoint()
        let server = try ControlServer(endpoint: endpoint)
        serveEcho(server)
        defer { server.stop() }
        let path = try #require(ControlEndpoint.ipcPath(endpoint))
        #expect(mode(of: path) & 0o077 == 0, "socket mode \(String(mode(of: path), radix: 8))")
        let reply = try #require(try ControlClient.call(endpoint, ControlRequest(cmd: "ping")))
        #expect(reply.ok && reply.run == "ping")
    }

    @Test func aDaemonRefusesASocketDirectoryOthersCanEnterOrWrite() throws {
        let open = NSTemporaryDirectory() + "moire-open-\(UUID().uuidString.prefix(8))"
        mkdir(open, 0o755)
        chmod(open, 0o755)
        do {
            _ = try ControlServer(endpoint: "ipc://\(open)/control.sock")
            Issue.record("bound a control socket in a directory open to others")
        } catch let e as MoireError {
            #expect(e.kind == .permission && e.message.contains("open to others"), "\(e)")
        }
        // Something that is not a socket at the path is never replaced (libzmq would unlink it).
        let endpoint = privateControlEndpoint()
        let path = try #require(ControlEndpoint.ipcPath(endpoint))
        try Data("precious".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: MoireError.self) { try ControlServer(endpoint: endpoint) }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "precious")
    }

    @Test func aSecondDaemonDoesNotTakeOverARunningOnesSocket() throws {
        let endpoint = privateControlEndpoint()
        let first = try ControlServer(endpoint: endpoint)
        serveEcho(first)
        defer { first.stop() }
        do {
            _ = try ControlServer(endpoint: endpoint)
            Issue.record("a second daemon took over the socket")
        } catch let e as MoireError {
            #expect(e.message.contains("already listens"), "\(e)")
        }
        #expect(try ControlClient.call(endpoint, ControlRequest(cmd: "ping"))?.ok == true)
    }

    @Test func aClientRefusesASocketThatIsNotThePinnedUsers() throws {
        let endpoint = privateControlEndpoint()
        let server = try ControlServer(endpoint: endpoint)
        serveEcho(server)
        defer { server.stop() }
        do {
            _ = try ControlClient.call(endpoint, ControlRequest(cmd: "start"), pin: .socketOwner(getuid() + 4242))
            Issue.record("a client sent a request to a socket of another owner")
        } catch let e as MoireError {
            #expect(e.kind == .permission && e.message.contains("not the daemon you mean"), "\(e)")
        }
    }

    /// A fake daemon in a directory anyone may write (where anyone could have put it) is refused
    /// before a request is sent: `moire run` never reports a run that a fake acknowledged.
    @Test func aFakeDaemonInAnOpenDirectoryIsRefused() throws {
        let open = NSTemporaryDirectory() + "moire-fake-\(UUID().uuidString.prefix(8))"
        mkdir(open, 0o777)
        chmod(open, 0o777)
        let endpoint = "ipc://\(open)/control.sock"
        let fake = try ZMQSocket(type: .rep)
        try fake.bind(endpoint)
        do {
            _ = try ControlClient.call(endpoint, ControlRequest(cmd: "start"), timeoutMs: 500)
            Issue.record("a client talked to a socket in a world-writable directory")
        } catch let e as MoireError {
            #expect(e.kind == .permission && e.message.contains("written by others"), "\(e)")
        }
        #expect(try fake.poll(timeoutMs: 50) == false, "the fake received a request")
    }

    @Test func tcpControlNeedsCurveKeys() throws {
        do {
            _ = try ControlServer(endpoint: "tcp://127.0.0.1:*")
            Issue.record("a tcp control endpoint was bound without keys")
        } catch let e as MoireError {
            #expect(e.kind == .permission && e.message.contains("CURVE"), "\(e)")
        }
        #expect(throws: MoireError.self) {
            try ControlClient.call("tcp://127.0.0.1:1", ControlRequest(cmd: "ping"), timeoutMs: 100)
        }
    }

    @Test func curveAdmitsAuthorizedKeysOnlyAndTheClientPinsTheDaemonsKey() throws {
        let serverKeys = try CurveKeyPair.generate()
        let friend = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let server = try ControlServer(
            endpoint: "tcp://127.0.0.1:*", access: .curve(server: serverKeys, authorizedClients: [friend.publicKey]))
        serveEcho(server)
        defer { server.stop() }
        // The authorized client is answered.
        let ok = try ControlClient.call(
            server.endpoint, ControlRequest(cmd: "status"), pin: .curve(server: serverKeys.publicKey, client: friend))
        #expect(ok?.ok == true && ok?.run == "status")
        // A client whose key is not on the list gets no answer and is told it was refused.
        do {
            let r = try ControlClient.call(
                server.endpoint, ControlRequest(cmd: "start"), timeoutMs: 3000,
                pin: .curve(server: serverKeys.publicKey, client: stranger))
            #expect(r == nil, "an unauthorized key was answered")
        } catch let e as MoireError {
            #expect(e.kind == .permission && e.message.contains("refused our key"), "\(e)")
        }
        #expect(server.refused >= 1)
        // A plain (unauthenticated) client gets nothing.
        let plain = try ZMQSocket(type: .req)
        try plain.connect(server.endpoint)
        try plain.send([.bytes(Wire.encode(ControlRequest(cmd: "start")))], dontWait: true)
        #expect(try plain.poll(timeoutMs: 500) == false)
        // A client that pins another daemon's key is not answered by this one.
        let other = try CurveKeyPair.generate()
        do {
            let r = try ControlClient.call(
                server.endpoint, ControlRequest(cmd: "start"), timeoutMs: 1000,
                pin: .curve(server: other.publicKey, client: friend))
            #expect(r == nil, "a daemon that cannot prove the pinned key was believed")
        } catch let e as MoireError {
            #expect(e.kind == .permission, "\(e)")
        }
    }

    /// A fake daemon on tcp (a plain REP that acknowledges everything) cannot answer a client that
    /// pins the real daemon's key.
    @Test func aFakeTcpDaemonIsNotBelieved() throws {
        let fake = try ZMQSocket(type: .rep)
        try fake.bind("tcp://127.0.0.1:*")
        let endpoint = try fake.lastEndpoint()
        let pinned = try CurveKeyPair.generate().publicKey
        var answered = false
        do {
            answered =
                try ControlClient.call(
                    endpoint, ControlRequest(cmd: "start"), timeoutMs: 1000,
                    pin: .curve(server: pinned, client: try CurveKeyPair.generate())) != nil
        } catch let e as MoireError {
            #expect(e.kind == .permission, "\(e)")
        }
        #expect(!answered)
        #expect(try fake.poll(timeoutMs: 50) == false, "the fake received a request")
    }

    @Test func keyFilesRoundTripInTheZeroMQCertificateFormat() throws {
        let dir = NSTemporaryDirectory() + "moire-keys-\(UUID().uuidString.prefix(8))"
        let pair = try CurveKeyPair.generate()
        let files = try CurveKeyFile.write(pair, name: "moired", directory: dir)
        #expect(mode(of: files.secretFile) == 0o600)
        #expect(try CurveKeyFile.readPublic(files.publicFile) == pair.publicKey)
        #expect(try CurveKeyFile.readSecret(files.secretFile) == pair)
        #expect(try CurveKeyFile.readAllowList(dir) == [pair.publicKey])
        // Never replaced.
        #expect(throws: MoireError.self) { try CurveKeyFile.write(pair, name: "moired", directory: dir) }
        // A secret key others can read is refused, as ssh refuses one.
        chmod(files.secretFile, 0o644)
        #expect(throws: MoireError.self) { try CurveKeyFile.readSecret(files.secretFile) }
        // pyzmq's zmq.auth.create_certificates writes this form (quotes, indentation, comments).
        let pyzmq = dir + "/py.key"
        try "#   ****  Generated by pyzmq  ****\nmetadata\ncurve\n    public-key = \"\(pair.publicKey.z85)\"\n"
            .write(toFile: pyzmq, atomically: true, encoding: .utf8)
        #expect(try CurveKeyFile.readPublic(pyzmq) == pair.publicKey)
        // Malformed keys are refused with their file.
        let bad = dir + "/bad.key"
        try "public-key = \"short\"\n".write(toFile: bad, atomically: true, encoding: .utf8)
        do { _ = try CurveKeyFile.readPublic(bad); Issue.record("accepted a short key") } catch let e as MoireError {
            #expect(e.place == bad)
        }
    }

    @Test func endpointRulesAreOneForValidateRunAndTheBus() {
        for good in [
            "tcp://127.0.0.1:5560", "tcp://127.0.0.1:*", "tcp://localhost:1", "ipc:///run/x.sock", "inproc://a",
        ] {
            #expect(EndpointRule.bindProblem(good) == nil, "\(good)")
        }
        for bad in [
            "tcp://0.0.0.0:5560", "tcp://*:5560", "tcp://[::]:5560", "tcp://eth0:5560", "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999", "tcp://10.0.0.2:1", "udp://x", "ipc://", "tcp://127.0.0.1.evil.com:5",
        ] {
            #expect(EndpointRule.bindProblem(bad) != nil, "\(bad)")
        }
    }
}

private func busHeader(_ seq: Int, bytes: Int) -> FrameHeader {
    FrameHeader(
        run: "r", seq: seq, index: seq, t: seq, channel: "gfp", c: 0, angle: 0, phase: 0, z: 0, width: bytes / 2,
        height: 1, pixelSizeUm: 0.1)
}

private let busStart = RunStart(
    run: "r", protocolName: "p", protocolFile: "/p.yaml", mode: "widefield", rig: "rig", objectiveNA: 1.4,
    magnification: 100, channels: [], shape: ["t": 1], pixel: .uint16, pixelSizeUm: 0.1, startedNs: 1)

/// What one honest subscriber saw: starts, frame sequence numbers, whether `stop` came.
private struct Seen {
    var starts = 0
    var seqs: [Int] = []
    var stopped = false

    mutating func take(_ item: BusItem) {
        switch item {
        case .frame(let h, _): seqs.append(h.seq)
        case .run(.start, _): starts += 1
        case .run(.stop, _): stopped = true
        }
    }

    var contiguous: Bool { seqs == Array(0..<seqs.count) }
}

/// Collects the result bus's events (any thread).
// Sendable by hand: `events` guarded by `lock`.
private final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [ResultBusEvent] = []
    func add(_ e: ResultBusEvent) { lock.lock(); events.append(e); lock.unlock() }
    var all: [ResultBusEvent] { lock.lock(); defer { lock.unlock() }; return events }
}

private func busEndpoint() -> String {
    let directory = NSTemporaryDirectory() + "moire-bus-\(UUID().uuidString.prefix(8))"
    mkdir(directory, 0o700)
    return "ipc://\(directory)/bus.sock"
}

/// Waits (a two-minute hang watchdog, not a speed check) until the publisher has seen `n` subscriptions.
private func awaitSubscriptions(_ publisher: ResultPublisher, _ n: Int) {
    let watchdog = Date(timeIntervalSinceNow: 120)
    while publisher.subscriptions < n && Date() < watchdog {
        publisher.serviceSubscriptions()
        usleep(2000)
    }
}

/// The result bus under hostile and careless clients (the security issue's S3 and R3), over real ipc sockets.
@Suite(.serialized) struct ResultBusHostileTests {
    /// A subscriber that never reads holds at most its byte budget: it misses messages (counted,
    /// reported), the honest subscriber gets every frame and the stop, and the stop does not wait forever.
    @Test func aStalledSubscriberIsSkippedWithinItsByteBudgetWhileOthersGetEverything() throws {
        let frameBytes = 64 * 1024
        let frames = 2000
        var limits = ResultBusLimits()
        limits.bytesPerSubscriber = 4 << 20
        limits.largestMessageBytes = frameBytes
        let log = EventLog()
        let publisher = try ResultPublisher(endpoint: busEndpoint(), limits: limits) { log.add($0) }
        #expect(limits.messagesPerSubscriber == 64)
        let stalled = try ZMQSocket(type: .sub)
        try stalled.limitReceiving(messages: 1, kernelBytes: 64 * 1024)
        try stalled.subscribe("")
        try stalled.connect(publisher.endpoint)
        let honest = try BusSubscriber(endpoint: publisher.endpoint)
        awaitSubscriptions(publisher, 2)
        var seen = Seen()
        try publisher.publishStart(busStart)
        let payload = [UInt8](repeating: 7, count: frameBytes)
        for i in 0..<frames {
            try payload.withUnsafeBytes { try publisher.publish(header: busHeader(i, bytes: frameBytes), payload: $0) }
            // Lockstep with the honest reader (at most 16 behind, well inside its queue): on a
            // loaded machine the honest subscriber is never the slow one.
            while seen.seqs.count + 16 < i + 1, let item = try honest.next(timeoutMs: 120_000) { seen.take(item) }
        }
        try publisher.publishStop(
            RunStop(
                run: "r", reason: "completed", error: nil, frames: frames, missing: 0, planned: frames, stoppedNs: 2))
        while !seen.stopped, let item = try honest.next(timeoutMs: 10_000) { seen.take(item) }
        #expect(
            seen.starts == 1 && seen.contiguous && seen.seqs.count == frames && seen.stopped,
            "\(seen.seqs.count) frames")
        // Without a bound every frame (125 MiB) would queue for the stalled subscriber; with it, at most
        // its 64-message queue plus what the kernel's socket buffers and its 1-message receive queue hold.
        var reachedStalled = 0
        while try stalled.poll(timeoutMs: 200) {
            let parts = try stalled.receive()
            if parts.first?.string == "raw.gfp" { reachedStalled += 1 }
        }
        #expect(reachedStalled <= 64 + 32, "the stalled subscriber was sent \(reachedStalled) of \(frames) frames")
        #expect(publisher.counts.subscriberQueueFull >= 1)
        #expect(log.all.contains { if case .subscriberQueueFull = $0 { return true } else { return false } })
    }

    /// A client toggling its subscription as fast as it can does not flood the others with `start`
    /// replays, nor cost them a frame or the stop.
    @Test func subscriptionChurnDoesNotFloodHonestSubscribers() throws {
        let log = EventLog()
        let publisher = try ResultPublisher(endpoint: busEndpoint()) { log.add($0) }
        let honest = try BusSubscriber(endpoint: publisher.endpoint)
        awaitSubscriptions(publisher, 1)
        try publisher.publishStart(busStart)
        let churning = ChurnFlag()
        let endpoint = publisher.endpoint
        let churner = Thread {
            guard let s = try? ZMQSocket(type: .sub), (try? s.connect(endpoint)) != nil else { return }
            while churning.on {
                try? s.subscribe("run")
                try? s.unsubscribe("run")
            }
        }
        churner.start()
        var seen = Seen()
        let began = Date()
        let payload = [UInt8](repeating: 1, count: 256)
        // Frames keep going until the churn has been seen in bulk (libzmq itself holds a flood at
        // its queue of 1000 subscription messages; a hang watchdog bounds the loop).
        var i = 0
        while (publisher.subscriptions < 300 || i < 300) && Date().timeIntervalSince(began) < 120 {
            try payload.withUnsafeBytes { try publisher.publish(header: busHeader(i, bytes: 256), payload: $0) }
            i += 1
            while let item = try honest.next(timeoutMs: 0) { seen.take(item) }
            usleep(500)
        }
        churning.stop()
        let elapsed = Date().timeIntervalSince(began)
        try publisher.publishStop(
            RunStop(run: "r", reason: "completed", error: nil, frames: i, missing: 0, planned: i, stoppedNs: 2))
        while !seen.stopped, let item = try honest.next(timeoutMs: 10_000) { seen.take(item) }
        let allowed = 1 + Int(elapsed / 0.25) + 1
        #expect(publisher.subscriptions >= 300)
        #expect(
            seen.starts <= allowed, "\(seen.starts) starts for \(publisher.subscriptions) subscriptions in \(elapsed) s"
        )
        #expect(seen.contiguous && seen.seqs.count == i && seen.stopped)
        #expect(log.all.contains { if case .subscriptionChurn = $0 { return true } else { return false } })
    }

    /// A subscriber still behind when the run ends gets the tail and `stop`: the bus's queue drains
    /// after it closes (the flaky Python-example failure: the end of the run discarded what was
    /// queued), and a program waits for that drain before it ends (`awaitClosedBuses`, or the
    /// process's end discards the queue). The endpoint is free at once: a new bus binds it while
    /// the old one drains.
    @Test func aSubscriberBehindWhenTheBusClosesStillGetsTheTailAndStop() throws {
        let frameBytes = 64 * 1024
        let frames = 200
        var limits = ResultBusLimits()
        limits.bytesPerSubscriber = 32 << 20
        limits.largestMessageBytes = frameBytes
        limits.drainAtCloseMs = 120_000  // a hang watchdog for a loaded machine
        let slow = try ZMQSocket(type: .sub)
        try slow.limitReceiving(messages: 1, kernelBytes: 64 * 1024)
        try slow.subscribe("")
        var endpoint = ""
        do {
            let publisher = try ResultPublisher(endpoint: "tcp://127.0.0.1:*", limits: limits)
            endpoint = publisher.endpoint
            try slow.connect(endpoint)
            awaitSubscriptions(publisher, 1)
            try publisher.publishStart(busStart)
            let payload = [UInt8](repeating: 5, count: frameBytes)
            for i in 0..<frames {
                try payload.withUnsafeBytes {
                    try publisher.publish(header: busHeader(i, bytes: frameBytes), payload: $0)
                }
            }
            try publisher.publishStop(
                RunStop(
                    run: "r", reason: "completed", error: nil, frames: frames, missing: 0, planned: frames, stoppedNs: 2
                ))
            #expect(publisher.counts.subscriberQueueFull == 0)
        }
        // The bus is closed; 12.5 MiB of frames are still queued for the slow subscriber.
        let next = try ResultPublisher(endpoint: endpoint)
        #expect(next.endpoint == endpoint)
        let drained = ChurnFlag()
        Thread.detachNewThread {
            ResultPublisher.awaitClosedBuses()
            drained.stop()
        }
        usleep(300_000)
        #expect(drained.on, "the wait for closed buses returned while 12.5 MiB were still queued")
        var seen = Seen()
        while !seen.stopped, try slow.poll(timeoutMs: 120_000) {
            seen.take(try BusSubscriber.decode(try slow.receive()))
        }
        #expect(
            seen.starts == 1 && seen.stopped && seen.contiguous && seen.seqs.count == frames,
            "\(seen.seqs.count) frames")
        let watchdog = Date(timeIntervalSinceNow: 120)
        while drained.on && Date() < watchdog { usleep(10_000) }
        #expect(!drained.on, "the wait for closed buses did not return once the queue had drained")
    }

    @Test func fiftySubscribersEachGetStartEveryFrameAndStop() throws {
        let publisher = try ResultPublisher(endpoint: busEndpoint())
        let subscribers = try (0..<50).map { _ in try BusSubscriber(endpoint: publisher.endpoint) }
        awaitSubscriptions(publisher, 50)
        var seen = [Seen](repeating: Seen(), count: 50)
        try publisher.publishStart(busStart)
        let frames = 200
        let payload = [UInt8](repeating: 3, count: 4096)
        for batch in stride(from: 0, to: frames, by: 20) {
            for i in batch..<(batch + 20) {
                try payload.withUnsafeBytes { try publisher.publish(header: busHeader(i, bytes: 4096), payload: $0) }
            }
            for (k, s) in subscribers.enumerated() {
                while seen[k].seqs.count < batch + 20, let item = try s.next(timeoutMs: 120_000) { seen[k].take(item) }
            }
        }
        try publisher.publishStop(
            RunStop(
                run: "r", reason: "completed", error: nil, frames: frames, missing: 0, planned: frames, stoppedNs: 2))
        for (k, s) in subscribers.enumerated() {
            while !seen[k].stopped, let item = try s.next(timeoutMs: 10_000) { seen[k].take(item) }
        }
        #expect(seen.allSatisfy { $0.starts >= 1 && $0.contiguous && $0.seqs.count == frames && $0.stopped })
        #expect(publisher.counts.subscriberQueueFull == 0)
    }
}

/// A flag the churning thread reads.
// Sendable by hand: `value` guarded by `lock`.
private final class ChurnFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = true
    var on: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func stop() { lock.lock(); value = false; lock.unlock() }
}
