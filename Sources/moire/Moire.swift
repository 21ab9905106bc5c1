import ArgumentParser
import Foundation
import Logging
import MoireCore
import MoirePipeline

@main
struct Moire: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moire",
        abstract: "Moiré: acquisition, streaming and recording for super-resolution microscopes.",
        version: MoireVersion.string,
        subcommands: [
            Run.self, Validate.self, Subscribe.self, Replay.self, Inspect.self, Recover.self, Reconstruct.self,
            Preview.self, Denoise.self, Train.self, Devices.self, Bench.self, WisdomCommand.self, Status.self,
            Keys.self, Merge.self, Batch.self, Worker.self,
        ])

    /// The subcommands whose stages share the cores while they run (live SIM, denoising and
    /// recording side by side, or a worker beside its transport): their OpenMP threads sleep
    /// after each primitive (`Runtime.preferSleepingOpenMPThreads`). The offline commands
    /// (`denoise`, `train`) run one stage of many small training primitives, which the default
    /// spinning serves better: 10 frames of `moire denoise` took 10.5–11.7 s passive against
    /// 8.9–10.2 s spinning.
    static let stagesShareTheCores: [any ParsableCommand.Type] = [Run.self, Replay.self, Worker.self, Bench.self]

    static func main() {
        let names = stagesShareTheCores.map { $0.configuration.commandName ?? "\($0)".lowercased() }
        if let subcommand = CommandLine.arguments.dropFirst().first, names.contains(subcommand) {
            Runtime.preferSleepingOpenMPThreads()
        }
        Runtime.keepFreedMemoryForReuse()
        main(nil)
    }
}

/// Logging for the CLI: warnings and above to stderr unless verbose.
func bootstrapLogging(verbose: Bool) {
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = verbose ? .debug : .warning
        return h
    }
}

/// Prints a Moiré error for people and exits non-zero (2 for bad input, 1 otherwise).
func fail(_ error: Error) -> ExitCode {
    if let e = error as? MoireError {
        FileHandle.standardError.write(Data("error: \(e.description)\n".utf8))
        switch e.kind {
        case .config, .validation, .usage, .format: return ExitCode(2)
        default: return ExitCode(1)
        }
    }
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    return ExitCode(1)
}

func absolute(_ path: String) -> String {
    if path.hasPrefix("/") { return URL(fileURLWithPath: path).standardized.path }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath + "/" + path).standardized.path
}

/// Whether an offline command may replace files at its outputs (`--overwrite`).
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Replace existing files at the output paths (otherwise the command refuses).")
    var overwrite = false

    /// Throws unless every output is new (or `--overwrite` was given) and none is an input: a
    /// result never silently replaces a file, and never its own source.
    func check(outputs: [String?], inputs: [String]) throws {
        let sources = Set(inputs.map(absolute))
        for case let output? in outputs {
            let path = absolute(output)
            if sources.contains(path) {
                throw MoireError(
                    .usage, "the output would replace the input it is made from; give another path", place: output)
            }
            if !overwrite && FileManager.default.fileExists(atPath: path) {
                throw MoireError(
                    .usage, "a file already exists here; refusing to overwrite it (give --overwrite, or another path)",
                    place: output)
            }
        }
    }
}
