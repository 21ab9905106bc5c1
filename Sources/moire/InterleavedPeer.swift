import Foundation
import MoirePipeline

/// A peer benchmark process that runs one unit of its work at a time, on request
/// (Benchmarks/peers/interleave.py). `moire bench` alternates its own units with the peer's, so
/// that a shared machine's load from other tenants weighs on both sides alike and the ratio
/// measures the code rather than the moment each side happened to run in.
final class InterleavedPeer {
    /// Why a peer could not be used (not installed, or it failed before it was ready).
    struct Unavailable: Error {
        var reason: String
    }

    /// The peer's name and set-up time, from its ready line.
    private(set) var name = ""
    private(set) var setUpMs: Double?
    private let process = Process()
    private let requests: FileHandle
    private let replies: FileHandle
    private var pending = Data()

    private struct Ready: Decodable {
        var ready: Bool?
        var peer: String?
        var calibrate_ms: Double?
        var error: String?
    }

    private struct Reply: Decodable {
        var ms: Double?
        var error: String?
    }

    /// Starts `arguments` (run through /usr/bin/env) and waits for its ready line.
    init(_ arguments: [String]) throws {
        // A peer that exits early must not take the benchmark down with a broken pipe.
        signal(SIGPIPE, SIG_IGN)
        let input = Pipe()
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        // The peer runs with the user's environment (its OpenMP threads keep their default policy).
        process.environment = Runtime.environmentAsGiven
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        requests = input.fileHandleForWriting
        replies = output.fileHandleForReading
        do {
            try process.run()
        } catch {
            throw Unavailable(reason: "\(arguments.joined(separator: " ")) did not start: \(error)")
        }
        guard let line = readLine() else {
            throw Unavailable(reason: "\(arguments.joined(separator: " ")) exited before it was ready")
        }
        guard let ready = try? JSONDecoder().decode(Ready.self, from: Data(line.utf8)), ready.ready == true else {
            let said = (try? JSONDecoder().decode(Ready.self, from: Data(line.utf8)))?.error ?? line
            throw Unavailable(reason: said)
        }
        name = ready.peer ?? arguments.joined(separator: " ")
        setUpMs = ready.calibrate_ms
    }

    deinit {
        try? requests.close()
        process.waitUntilExit()
    }

    /// Has the peer run `task` once; its milliseconds as the peer measured them.
    func measure(_ task: String) throws -> Double {
        do {
            try requests.write(contentsOf: Data("\(task)\n".utf8))
        } catch {
            throw Unavailable(reason: "\(name) stopped reading its tasks: \(error)")
        }
        guard let line = readLine() else { throw Unavailable(reason: "\(name) exited during the measurement") }
        guard let reply = try? JSONDecoder().decode(Reply.self, from: Data(line.utf8)), let ms = reply.ms else {
            throw Unavailable(reason: "\(name) answered \(line)")
        }
        return ms
    }

    /// The next line the peer printed, or nil at the end of its output.
    private func readLine() -> String? {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending = Data(pending[(newline + 1)...])
                return line
            }
            let chunk = replies.availableData
            if chunk.isEmpty { return nil }
            pending.append(chunk)
        }
    }
}

/// Our measurement and the peer's, alternated round by round.
struct Alternation {
    var ours: [Double] = []
    var peer: [Double] = []

    /// `rounds` rounds of `oursPerRound` units of ours (each one's milliseconds from `ours`), then
    /// one of the peer's `task`.
    init(
        rounds: Int, oursPerRound: Int = 1, ours measureOurs: () throws -> Double, peer: InterleavedPeer, task: String
    ) throws {
        for _ in 0..<rounds {
            for _ in 0..<oursPerRound { ours.append(try measureOurs()) }
            self.peer.append(try peer.measure(task))
        }
    }
}
