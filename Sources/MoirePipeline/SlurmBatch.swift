import Foundation
import MoireCore
import MoireStorage

/// A batch reconstruction on a Slurm cluster, as PetaKit5D runs its jobs: `sbatch --array` with
/// one task per part (`moire reconstruct … --part K/N`, idempotent: a complete part is kept), a
/// merge job that runs after every task succeeded (`--dependency=afterok`, cancelled when one
/// fails), `squeue` and the part files on disk to follow it (no accounting database needed), and
/// failed parts resubmitted up to a limit. Its scripts, logs and state live in OUT's STEM.batch/.
public struct SlurmBatch: Codable, Sendable {
    /// What each part runs: `moire reconstruct` or `moire denoise`, both with `--part K/N`.
    public enum Tool: String, Codable, Sendable, CaseIterable {
        case reconstruct
        case denoise
    }

    public var recording: String
    /// nil in jobs submitted before the denoise tool existed: reconstruct.
    public var tool: Tool?
    public var output: String
    public var parts: Int
    public var retries: Int
    public var reconstructOptions: [String]
    public var sbatchOptions: [String]
    public var moire: String
    /// Job ids of every submission, oldest first.
    public var arrayJobs: [String] = []
    public var mergeJobs: [String] = []
    /// Submissions so far (the first included).
    public var attempts = 0

    public init(
        recording: String, output: String, parts: Int, retries: Int, tool: Tool = .reconstruct,
        reconstructOptions: [String], sbatchOptions: [String], moire: String
    ) throws {
        _ = try BatchPart(index: 1, count: parts)
        guard retries >= 0 else { throw MoireError(.usage, "--retries must be ≥ 0", place: "--retries") }
        let forbidden = ["--part", "--out"]
        if let clash = reconstructOptions.first(where: { option in forbidden.contains { option.hasPrefix($0) } }) {
            throw MoireError(.usage, "'\(clash)' is set by the batch job; leave it out of the \(tool.rawValue) options")
        }
        self.recording = recording
        self.tool = tool
        self.output = output
        self.parts = parts
        self.retries = retries
        self.reconstructOptions = reconstructOptions
        self.sbatchOptions = sbatchOptions
        self.moire = moire
    }

    /// The job's folder: scripts, logs, state.
    public var directory: String { RecordingIndex.stem(of: output) + ".batch" }
    var statePath: String { directory + "/job.json" }

    /// The job submitted earlier for `output`.
    public static func load(output: String) throws -> SlurmBatch {
        let path = RecordingIndex.stem(of: output) + ".batch/job.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MoireError(.usage, "no batch job was submitted for this output (no \(path))", place: output)
        }
        do {
            return try JSONDecoder().decode(SlurmBatch.self, from: data)
        } catch {
            throw MoireError(.format, "the batch job's state cannot be read: \(error)", place: path)
        }
    }

    /// This program's own path (what the job scripts run).
    public static func currentExecutable() throws -> String {
        let path =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }

    /// Submits `partNumbers` as one array job and the merge after it (only the merge when empty).
    public mutating func submit(parts partNumbers: [Int]) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let partScript = directory + "/part.sh"
        let mergeScript = directory + "/merge.sh"
        let reconstruct =
            [moire, (tool ?? .reconstruct).rawValue, recording, "--out", output] + reconstructOptions
        try script(
            "part $SLURM_ARRAY_TASK_ID of \(parts)",
            command: reconstruct.map(Self.quoted).joined(separator: " ") + " --part \"$SLURM_ARRAY_TASK_ID/\(parts)\""
        )
        .write(toFile: partScript, atomically: true, encoding: .utf8)
        try script(
            "merge of \(parts) parts",
            command: [moire, "merge", output, "--parts", String(parts), "--overwrite"].map(Self.quoted)
                .joined(separator: " ")
        )
        .write(toFile: mergeScript, atomically: true, encoding: .utf8)
        var dependency: [String] = []
        if !partNumbers.isEmpty {
            let array = try Self.sbatch(
                [
                    "--job-name=moire-part", "--array=\(Self.arraySpec(partNumbers))",
                    "--output=\(directory)/part-%a.log",
                ]
                    + sbatchOptions + [partScript])
            arrayJobs.append(array)
            dependency = ["--dependency=afterok:\(array)", "--kill-on-invalid-dep=yes"]
        }
        let merge = try Self.sbatch(
            ["--job-name=moire-merge", "--output=\(directory)/merge.log"] + dependency + sbatchOptions + [mergeScript])
        mergeJobs.append(merge)
        attempts += 1
        try JSONEncoder().encode(self).write(to: URL(fileURLWithPath: statePath))
    }

    /// Where the job stands.
    public struct State: Sendable {
        public enum Phase: Sendable, Equatable {
            case done
            case queued
            /// Nothing of the job is queued and these parts (maybe none: then the merge) did not finish.
            case failed([Int])
        }
        public var phase: Phase
        public var completeParts: Int
        public var parts: Int
        public var queuedJobs: Int
        public var merged: Bool

        public var summary: String {
            "parts complete \(completeParts)/\(parts), jobs queued or running \(queuedJobs), merged: "
                + (merged ? "yes" : "no")
        }
    }

    public func state() throws -> State {
        let merged = BatchPart.isComplete(output)
        let complete = (1...parts).filter { BatchPart.isComplete(BatchPart.path(for: output, index: $0, count: parts)) }
        let ours = Set(arrayJobs + mergeJobs)
        let queue = try Self.run("squeue", ["--noheader", "--format=%F %A"])
        let queued = queue.split(separator: "\n").filter { line in
            line.split(separator: " ").contains { ours.contains(String($0)) }
        }.count
        let phase: State.Phase
        if merged {
            phase = .done
        } else if queued > 0 {
            phase = .queued
        } else {
            phase = .failed((1...parts).filter { !complete.contains($0) })
        }
        return State(phase: phase, completeParts: complete.count, parts: parts, queuedJobs: queued, merged: merged)
    }

    /// `1-8`, or `2,5,7`.
    static func arraySpec(_ parts: [Int]) -> String {
        let sorted = parts.sorted()
        if let first = sorted.first, let last = sorted.last, sorted == Array(first...last), sorted.count > 1 {
            return "\(first)-\(last)"
        }
        return sorted.map(String.init).joined(separator: ",")
    }

    /// A word for a POSIX shell, single-quoted.
    static func quoted(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    private func script(_ what: String, command: String) -> String {
        "#!/bin/bash\n# Written by `moire batch submit`: \(what).\nset -e\nexec \(command)\n"
    }

    /// Submits with `sbatch --parsable`; the job id.
    static func sbatch(_ arguments: [String]) throws -> String {
        let out = try run("sbatch", ["--parsable"] + arguments)
        guard let id = out.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }),
            !id.isEmpty, id.allSatisfy(\.isNumber)
        else { throw MoireError(.io, "sbatch answered '\(out.prefix(200))', not a job id", place: "sbatch") }
        return id
    }

    /// Runs a Slurm command; its standard output, or an error with its standard error.
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do {
            try process.run()
        } catch {
            throw MoireError(.io, "cannot run \(tool): \(error)", place: tool)
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: message.prefix(400), as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines)
            let reason = process.terminationStatus == 127 ? "not found: is this a Slurm submit host?" : text
            throw MoireError(.io, "\(tool) failed (exit \(process.terminationStatus)): \(reason)", place: tool)
        }
        return String(decoding: data, as: UTF8.self)
    }
}
