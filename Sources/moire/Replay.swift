import ArgumentParser
import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoirePipeline
import MoireStorage
import MoireTransport

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Replay a recording through the pipeline against simulated hardware, checking device state against the plan.",
        discussion: """
            A plain TIFF stack (uint16 frames acquired elsewhere, in the protocol's plan order) replays \
            with --protocol: its whole time points go through the live stages (reconstruction, \
            denoising, publishing, recording) as if the camera had delivered them.
            """
    )

    @Argument(help: "Moiré recording (OME-TIFF or OME-Zarr), or a plain TIFF stack with --protocol.")
    var recording: String
    @Option(name: .long, help: "Protocol (default: the one the recording names).") var `protocol`: String?
    @Option(name: .long, help: "Record the replay to this file.") var out: String?
    @Flag(name: .long, help: "Replace an existing file at --out.") var overwrite = false
    @Option(name: .long, help: "Result-bus endpoint for the replayed frames.") var publish: String?
    @Option(name: .long, help: "Wait (up to 30 s) for this many result-bus subscribers before the first frame.")
    var waitSubscribers = 0
    @Flag(name: .long, help: "No progress bar.") var quiet = false

    func run() throws {
        bootstrapLogging(verbose: false)
        // Subscribers a little behind still get the tail of the replay and its stop before this process ends.
        defer { ResultPublisher.awaitClosedBuses() }
        do {
            let result = try ReplaySession.run(
                recording: recording, protocolFile: self.protocol, out: out, publish: publish, overwrite: overwrite,
                waitForSubscribers: waitSubscribers
            ) { _ in }
            let r = result.run
            let checked = try RecordingFormat.openReader(path: recording).layout != nil
            let states =
                checked
                ? "\(r.stateMismatches) device-state mismatches against the plan"
                : "no device state to check (a plain stack)"
            print("replayed \(r.delivered) frames, \(r.missing) missing, \(states): \(r.reason)")
            if let s = result.recording { print("recording: \(s.path)") }
            printStageReports(result)
            if r.stateMismatches > 0 || r.reason != "completed" { throw ExitCode(1) }
        } catch let e as ExitCode { throw e } catch { throw fail(error) }
    }
}
