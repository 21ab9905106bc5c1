import ArgumentParser
import Foundation
import MoireCore
import MoireTransport

/// Which daemon a command talks to, and how it knows it is that daemon.
struct DaemonOptions: ParsableArguments {
    @Option(
        name: .long,
        help: """
            Control endpoint of the daemon: an ipc:// socket of yours, or tcp://HOST:PORT with CURVE \
            (default \(ControlEndpoint.defaultEndpoint)).
            """)
    var daemon: String?
    @Option(
        name: .long,
        help: "The tcp daemon's public key: only a daemon that proves it is answered (default KEYS/moired.key).")
    var daemonKey: String?
    @Option(name: .long, help: "Your CURVE secret key for a tcp daemon (default KEYS/client.key_secret).")
    var clientKey: String?
    @Option(
        name: .long,
        help: "The user whose ipc daemon this is (a daemon shared through --control-group); default: you.")
    var daemonUser: String?

    /// The endpoint to use.
    var endpoint: String { daemon ?? ControlEndpoint.defaultEndpoint }

    /// The pin for `endpoint`: the socket's owner (you) for ipc, the daemon's key for tcp.
    func pin() throws -> DaemonPin {
        let keys = CurveKeyFile.defaultDirectory
        if endpoint.hasPrefix("tcp://") {
            let server = try CurveKeyFile.readPublic(daemonKey ?? keys + "/moired.key")
            let client = try CurveKeyFile.readSecret(clientKey ?? keys + "/client.key_secret")
            return .curve(server: server, client: client)
        }
        guard daemonKey == nil, clientKey == nil else {
            throw MoireError(.usage, "--daemon-key and --client-key are for a tcp:// daemon", place: endpoint)
        }
        guard let daemonUser else { return .currentUser }
        guard let entry = getpwnam(daemonUser) else {
            throw MoireError(.usage, "no user named '\(daemonUser)'", place: "--daemon-user")
        }
        return .socketOwner(entry.pointee.pw_uid)
    }

    /// Sends one request to the pinned daemon; nil when nothing answers.
    func call(_ request: ControlRequest, timeoutMs: Int32 = 2000) throws -> ControlReply? {
        try ControlClient.call(endpoint, request, timeoutMs: timeoutMs, pin: try pin())
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the daemon who it is and what it is doing.")
    @OptionGroup var connection: DaemonOptions

    func run() throws {
        bootstrapLogging(verbose: false)
        let reply: ControlReply?
        do { reply = try connection.call(ControlRequest(cmd: "status")) } catch { throw fail(error) }
        guard let reply else {
            throw fail(MoireError(.transport, "no daemon answers", place: connection.endpoint))
        }
        guard reply.ok else {
            throw fail(MoireError(.permission, reply.error ?? "the daemon refused", place: connection.endpoint))
        }
        let who = reply.daemon.map { $0.summary + ($0.dataRoot.map { ", recordings under \($0)" } ?? "") } ?? "a daemon"
        print("\(who) at \(connection.endpoint)")
        var line = "state: \(reply.state ?? "?")"
        if let run = reply.run { line += ", run \(run)" }
        if let planned = reply.planned {
            line += ", \(reply.frames ?? 0)/\(planned) frames, \(reply.missing ?? 0) missing"
        }
        if let published = reply.published { line += ", \(published) messages on the result bus" }
        print(line)
        if let error = reply.error { print("error: \(error)") }
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "CURVE keys for a daemon's tcp control endpoint.",
        discussion: """
            Keys are ZeroMQ certificates (the czmq / pyzmq zmq.auth format): NAME.key holds the public \
            key, NAME.key_secret both (mode 0600). The daemon reads KEYS/moired.key_secret and allows the \
            client keys in KEYS/authorized/*.key; a client reads KEYS/client.key_secret and pins the \
            daemon's KEYS/moired.key. KEYS is $XDG_CONFIG_HOME/moire/keys (~/.config/moire/keys).
            """,
        subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a key pair: NAME.key and NAME.key_secret.")
        @Argument(help: "Name: moired for a daemon, client (or a person's name) for a client.") var name: String
        @Option(name: .long, help: "Directory to write into (default KEYS).") var dir: String?

        func run() throws {
            do {
                let pair = try CurveKeyPair.generate()
                let files = try CurveKeyFile.write(pair, name: name, directory: dir ?? CurveKeyFile.defaultDirectory)
                print("public key \(pair.publicKey.z85)")
                print("wrote \(files.publicFile) and \(files.secretFile)")
            } catch { throw fail(error) }
        }
    }
}
