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
        for good in ["tcp://127.0.0.1:5560", "tcp://127.0.0.1:*", "tcp://localhost:1", "ipc:///run/x.sock", "inproc://a"] {
            #expect(EndpointRule.bindProblem(good) == nil, "\(good)")
        }
        for bad in ["tcp://0.0.0.0:5560", "tcp://*:5560", "tcp://[::]:5560", "tcp://eth0:5560", "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999", "tcp://10.0.0.2:1", "udp://x", "ipc://", "tcp://127.0.0.1.evil.com:5"]
        {
            #expect(EndpointRule.bindProblem(bad) != nil, "\(bad)")
        }
    }
}
