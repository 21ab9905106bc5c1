import ArgumentParser
import Foundation
import MoireCore
import MoirePipeline

/// `moire merge`: joins the parts of a batch reconstruction into one OME-TIFF.
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the parts of a batch job (OUT's STEM.part-K-of-N.ome.tif) into OUT, in order.")

    @Argument(help: "The output the parts were made for (.ome.tif).") var out: String
    @Option(name: .long, help: "How many parts the job had (N).") var parts: Int
    @OptionGroup var output: OutputOptions

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            try output.check(outputs: [out], inputs: [])
            if output.overwrite { try? FileManager.default.removeItem(atPath: absolute(out)) }
            let summary = try BatchMerge.merge(output: absolute(out), parts: parts)
            print(
                "merged \(summary.parts) parts: \(summary.timepoints) time points, \(summary.planes) planes into \(out)"
            )
        } catch { throw fail(error) }
    }
}

/// `moire batch`: batch reprocessing as Slurm array jobs.
struct Batch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reprocess a recording on a Slurm cluster: one array task per part, then a dependent merge.",
        subcommands: [BatchSubmit.self, BatchStatus.self])
}

struct BatchSubmit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract:
            "Submit `moire reconstruct|denoise RECORDING --out OUT --part K/N` as an sbatch array and the merge after it.",
        discussion: """
            Options after -- go to moire reconstruct (or, with --tool denoise, moire denoise) unchanged. The job's scripts, logs and state go in \
            OUT's STEM.batch/; `moire batch status OUT` follows it and resubmits failed parts.
            """)

    @Argument(help: "The recording to reprocess.") var recording: String
    @Option(name: .long, help: "The merged output (.ome.tif).") var out: String
    @Option(name: .long, help: "Number of parts (array tasks).") var parts: Int
    @Option(name: .long, help: "Times `batch status --resubmit` may resubmit failed parts.") var retries = 2
    @Option(name: .long, help: "Slurm partition (default: the cluster's default).") var partition: String?
    @Option(name: .long, help: "Extra sbatch option for every job (repeatable), e.g. --sbatch=--gres=gpu:1.")
    var sbatch: [String] = []
    @Option(name: .long, help: "What each part runs: reconstruct or denoise.") var tool: SlurmBatch.Tool = .reconstruct
    @Argument(parsing: .postTerminator, help: "Options for moire reconstruct (or denoise).")
    var reconstructOptions: [String] = []

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            guard FileManager.default.isReadableFile(atPath: recording) else {
                throw MoireError(.usage, "no readable recording here", place: recording)
            }
            _ = try BatchPart(index: 1, count: parts)
            var job = try SlurmBatch(
                recording: absolute(recording), output: absolute(out), parts: parts, retries: retries, tool: tool,
                reconstructOptions: reconstructOptions,
                sbatchOptions: sbatch + (partition.map { ["--partition=\($0)"] } ?? []),
                moire: try SlurmBatch.currentExecutable())
            try job.submit(parts: Array(1...parts))
            print(
                "submitted \(parts) parts as array job \(job.arrayJobs.last!) and the merge as job \(job.mergeJobs.last!)"
            )
            print("state, scripts and logs: \(job.directory)")
        } catch { throw fail(error) }
    }
}

struct BatchStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Where a batch job stands (squeue and the parts on disk); resubmit failed parts up to the limit.")

    @Argument(help: "The merged output the job was submitted for.") var out: String
    @Flag(name: .long, help: "Resubmit failed parts (and the merge) when nothing of the job is queued.")
    var resubmit = false
    @Option(name: .long, help: "Follow the job until it is done or failed, up to this many seconds.") var wait: Double?

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            var job = try SlurmBatch.load(output: absolute(out))
            let deadline = Date().addingTimeInterval(wait ?? 0)
            while true {
                let state = try job.state()
                print(state.summary)
                switch state.phase {
                case .done:
                    return
                case .queued:
                    guard wait != nil, Date() < deadline else { return }
                case .failed(let failedParts):
                    guard resubmit, job.attempts <= job.retries else {
                        throw MoireError(
                            .io,
                            "the job failed (parts \(failedParts.map(String.init).joined(separator: ", ")) missing) "
                                + "after \(job.attempts) attempt(s); logs in \(job.directory)", place: out)
                    }
                    try job.submit(parts: failedParts)
                    print(
                        "resubmitted parts \(failedParts.map(String.init).joined(separator: ", ")) as array job "
                            + "\(job.arrayJobs.last!) and the merge as job \(job.mergeJobs.last!)")
                    guard wait != nil else { return }
                }
                Thread.sleep(forTimeInterval: 1)
            }
        } catch { throw fail(error) }
    }
}

extension SlurmBatch.Tool: ExpressibleByArgument {}
