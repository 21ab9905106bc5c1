import ArgumentParser
import Foundation
import MoireCore
import MoirePipeline
import MoireTransport

/// `moire worker`: reconstructs the phase sets a daemon's (or an embedded run's) broker hands it.
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Work for a run's broker until stopped: SIM sets, 3D-SIM and light-sheet stacks (reconstruction.workers), live denoising's inference (denoise.workers).",
        discussion: """
            Runs under Slurm as well as by hand (docs/batch.md has a job script). Over tcp beyond \
            loopback the broker is CURVE-authenticated: give its public key and this worker's key pair.
            """)

    @Option(name: .long, help: "The broker's endpoint (reconstruction.work_endpoint or denoise.work_endpoint).")
    var connect: String
    @Option(name: .long, help: "This worker's name in the run's result (default: host:pid).") var name: String?
    @Option(name: .long, help: "The broker's public key file (NAME.key), for CURVE.") var serverKey: String?
    @Option(name: .long, help: "This worker's secret key file (NAME.key_secret), for CURVE.") var key: String?
    @Flag(name: .long, help: "Print a line for every set reconstructed.") var progress = false
    @Option(
        name: .long,
        help:
            "Memory (MiB) offered to a broker on this machine (ipc or loopback), so jobs and results do not cross the socket; its pages are taken only as they are used. 0: none."
    )
    var sharedMemoryMiB = WorkWorker.defaultSharedMemoryBytes >> 20

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            var curve: (server: CurveKey, client: CurveKeyPair)?
            switch (serverKey, key) {
            case (let server?, let client?):
                curve = (try CurveKeyFile.readPublic(server), try CurveKeyFile.readSecret(client))
            case (nil, nil):
                if connect.hasPrefix("tcp://"), EndpointRule.bindProblem(connect) != nil {
                    throw MoireError(
                        .usage, "a broker beyond loopback needs CURVE: give --server-key and --key", place: connect)
                }
            default:
                throw MoireError(.usage, "--server-key and --key go together")
            }
            guard sharedMemoryMiB == 0 || (16...65536).contains(sharedMemoryMiB) else {
                throw MoireError(.usage, "--shared-memory-mib is 0 or 16–65536, not \(sharedMemoryMiB)")
            }
            let processor = SIMWorkProcessor()
            let label = name ?? "\(ProcessInfo.processInfo.hostName):\(getpid())"
            let verbose = progress
            let resultMemory = WorkResultMemory()
            let worker = try WorkWorker(
                endpoint: connect, name: label, curve: curve, sharedMemoryBytes: sharedMemoryMiB << 20,
                resultMemory: resultMemory
            ) { item in
                let result = try processor.process(item, resultMemory: resultMemory)
                if verbose { FileHandle.standardOutput.write(Data("set \(item.sequence) reconstructed\n".utf8)) }
                return result
            }
            try worker.start()
            print("worker \(label) connected to \(connect); stop with SIGINT or SIGTERM")
            let stop = DispatchSemaphore(value: 0)
            signal(SIGINT, SIG_IGN)
            signal(SIGTERM, SIG_IGN)
            let sources = [SIGINT, SIGTERM].map { number in
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { stop.signal() }
                source.resume()
                return source
            }
            // The sources must live until a signal came (an optimized build would release them
            // after their last use, and the signals, ignored above, would then never arrive).
            withExtendedLifetime(sources) { stop.wait() }
            worker.stop()
            print("worker \(label): \(worker.jobsDone) set(s) reconstructed")
        } catch { throw fail(error) }
    }
}
