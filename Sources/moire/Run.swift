import ArgumentParser
import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoirePipeline
import MoireTransport

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an acquisition protocol (through a running moired, or embedded in this process).")

    @Argument(help: "Protocol file (YAML).") var protocolFile: String
    @Option(name: .long, help: "Recording path (overrides the protocol's outputs.recording).") var out: String?
    @Option(
        name: .long,
        help: "Rig file to run on instead of the protocol's rig (e.g. hardware-profiles/rigs/dmd-sim.yaml).") var rig:
        String?
    @Flag(name: .long, help: "Do not record.") var noRecord = false
    @Flag(name: .long, help: "Replace an existing recording at the output path (otherwise the run refuses).")
    var overwrite = false
    @Option(name: .long, help: "Result-bus endpoint (overrides outputs.publish).") var publish: String?
    @Flag(name: .long, help: "Do not publish on the result bus.") var noPublish = false
    @OptionGroup(title: "Daemon (without --daemon, your daemon at the default socket is used when it answers)")
    var connection: DaemonOptions
    @Option(name: .long, help: "Wait (up to 30 s) for this many result-bus subscribers before the first frame.")
    var waitSubscribers = 0
    @Flag(name: .long, help: "Run in this process even when a daemon answers.") var embedded = false
    @Option(name: .long, help: "Seed of the simulated devices' noise.") var seed: UInt64 = 1
    @Option(
        name: .long, help: "Simulated-camera fault to inject: drop:N, stall:N, disconnect:N, malformed:N (repeatable).")
    var fault: [String] = []
    @Option(
        name: .long,
        help: """
            Time of an embedded run on simulated devices: real (the camera's own rate; a frame the consumers \
            cannot take is dropped and counted, as real hardware does) or virtual (as fast as the machine \
            allows; devices wait for the consumers, so nothing is lost but by an injected fault).
            """)
    var clock: RunClock = .real
    @Flag(name: .long, help: "No progress bar.") var quiet = false
    @Flag(name: .long, help: "Debug logging.") var verbose = false

    func run() throws {
        bootstrapLogging(verbose: verbose)
        let faults: [CameraFault]
        do { faults = try fault.map(CameraFault.init(parsing:)) } catch { throw fail(error) }
        let proto: AcquisitionProtocol
        do { proto = try AcquisitionProtocol.load(file: protocolFile, rigFile: rig.map(absolute)) } catch {
            throw fail(error)
        }
        if let daemon = connection.daemon {
            guard clock == .real else { throw fail(MoireError(.usage, "--clock works on embedded runs only")) }
            guard !embedded else { throw fail(MoireError(.usage, "--daemon and --embedded exclude each other")) }
            guard faults.isEmpty else { throw fail(MoireError(.usage, "--fault works on embedded runs only")) }
            let reply: ControlReply?
            do { reply = try connection.call(ControlRequest(cmd: "ping"), timeoutMs: 2000) } catch { throw fail(error) }
            guard let reply, reply.ok else {
                throw fail(
                    MoireError(
                        .transport, "no daemon answers; start moired there or run with --embedded", place: daemon))
            }
            try runThroughDaemon(proto, on: reply.daemon)
            return
        }
        if !embedded, faults.isEmpty, clock == .real {
            switch defaultDaemon() {
            case .answered(let info):
                try runThroughDaemon(proto, on: info)
                return
            case .refused(let reason):
                FileHandle.standardError.write(Data("note: \(reason); running embedded in this process\n".utf8))
            case .absent:
                break
            }
        }
        var options = PipelineOptions()
        options.recordingPath = out.map(absolute)
        options.noRecording = noRecord
        options.overwrite = overwrite
        options.publishEndpoint = publish
        options.noPublish = noPublish
        options.seed = seed
        options.faults = faults
        options.waitForSubscribers = waitSubscribers
        options.subscriberWaitMs = 30_000
        Runtime.prepareFFT()
        defer { Runtime.saveFFTWisdom() }
        let pipeline: AcquisitionPipeline
        do {
            pipeline = try AcquisitionPipeline(protocol: proto, options: options, clock: clock.makeClock())
        } catch {
            throw fail(error)
        }
        let bar = ProgressBar(quiet: quiet)
        let signals = SignalHandler { count in
            if count == 1 {
                FileHandle.standardError.write(
                    Data("\nstopping after the current group (Ctrl-C again to abort)…\n".utf8))
                pipeline.runner.requestStop()
            } else {
                pipeline.runner.abort()
            }
        }
        defer { signals.cancel() }
        if !quiet {
            let target = pipeline.recordingPath.map { " → \($0)" } ?? ""
            print(
                "\(proto.name): \(proto.totalFrames) frames of \(proto.roiWidth)×\(proto.roiHeight) (\(proto.mode.rawValue), \(pipeline.runner.hardwareSequenced ? "hardware-sequenced" : "software-timed"), embedded in this process)\(target)"
            )
        }
        // Subscribers a little behind still get the tail of the run and its stop before this process ends.
        defer { ResultPublisher.awaitClosedBuses() }
        let result: PipelineResult
        do { result = try pipeline.run(onProgress: { bar.update($0) }) } catch { bar.finish(); throw fail(error) }
        bar.update(pipeline.runner.currentProgress, force: true)
        bar.finish()
        report(result)
        if let e = result.recordingError { throw fail(e) }
        if result.run.reason == "fault", let e = result.run.error { throw fail(e) }
        if result.run.reason != "completed" { throw ExitCode(130) }
    }

    private func report(_ r: PipelineResult) {
        let secs = Double(r.run.durationNs) / 1e9
        print(
            String(
                format: "run %@: %@ — %d frames, %d missing, %.2f s (%.1f fps)", r.runID, r.run.reason, r.run.delivered,
                r.run.missing, secs, secs > 0 ? Double(r.run.delivered) / secs : 0))
        if r.run.poolExhausted > 0 {
            print(
                "warning: \(r.run.poolExhausted) of the missing frames were lost because every frame-pool slot was in use "
                    + "(the recorder or live stages did not keep up)")
        }
        if !r.run.missingIndices.isEmpty {
            print("missing frame indices: \(r.run.missingIndices.map(String.init).joined(separator: ", "))")
        }
        if r.run.stateMismatches > 0 {
            print("warning: \(r.run.stateMismatches) frames had a device state that differs from the plan")
        }
        if let s = r.recording {
            print("recording: \(s.path) (\(s.planes) planes, \(s.timepoints) time points, \(s.missing) missing)")
        }
        printStageReports(r)
        if let e = r.publishEndpoint {
            print("published \(r.published) raw and \(r.derivedPublished) derived frames on \(e)")
        }
    }

    /// What answers at the default control socket.
    private enum DefaultDaemon {
        case answered(DaemonInfo?)
        /// Something is there that is not your daemon (another user's socket, an open directory).
        case refused(String)
        case absent
    }

    private func defaultDaemon() -> DefaultDaemon {
        let endpoint = ControlEndpoint.defaultEndpoint
        guard let path = ControlEndpoint.ipcPath(endpoint), FileManager.default.fileExists(atPath: path) else {
            return .absent
        }
        do {
            guard let reply = try connection.call(ControlRequest(cmd: "ping"), timeoutMs: 500), reply.ok else {
                return .absent
            }
            return .answered(reply.daemon)
        } catch {
            return .refused("\(error)")
        }
    }

    private func runThroughDaemon(_ proto: AcquisitionProtocol, on info: DaemonInfo?) throws {
        let daemon = connection.endpoint
        let req = ControlRequest(
            cmd: "start", protocolFile: absolute(protocolFile), out: out.map(absolute), rig: rig.map(absolute),
            overwrite: overwrite ? true : nil)
        guard let reply = try connection.call(req) else {
            throw fail(MoireError(.transport, "daemon did not answer", place: daemon))
        }
        guard reply.ok else { throw fail(MoireError(.config, reply.error ?? "daemon refused the run", place: daemon)) }
        let who = info?.summary ?? "the daemon"
        print("run \(reply.run ?? "?") started on \(who) at \(daemon)" + (reply.recording.map { " → \($0)" } ?? ""))
        let bar = ProgressBar(quiet: quiet)
        let connection = self.connection
        let signals = SignalHandler { _ in _ = try? connection.call(ControlRequest(cmd: "stop")) }
        defer { signals.cancel() }
        let t0 = Date()
        while true {
            Thread.sleep(forTimeInterval: 0.2)
            guard let s = try connection.call(ControlRequest(cmd: "status")) else {
                bar.finish()
                throw fail(MoireError(.transport, "daemon stopped answering", place: daemon))
            }
            bar.update(
                RunProgress(
                    done: s.frames ?? 0, planned: s.planned ?? 0, missing: s.missing ?? 0,
                    elapsedNs: Int64(Date().timeIntervalSince(t0) * 1e9), state: .acquiring))
            if s.run != reply.run || s.state == "idle" || s.state == "faulted" {
                bar.finish()
                print("run \(reply.run ?? "?") ended: \(s.state ?? "?")\(s.error.map { " — \($0)" } ?? "")")
                if s.state == "faulted" { throw ExitCode(1) }
                return
            }
        }
    }
}

/// The time an embedded run runs on (`moire run --clock`).
enum RunClock: String, ExpressibleByArgument, CaseIterable {
    case real
    case virtual

    func makeClock() -> MoireClock {
        switch self {
        case .real: RealClock()
        case .virtual: VirtualClock()
        }
    }
}

/// SIGINT/SIGTERM → a handler with the count of signals so far.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
final class SignalHandler: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private var count = 0
    private let lock = NSLock()

    init(_ handler: @escaping @Sendable (Int) -> Void) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [self] in
                lock.lock(); count += 1; let c = count; lock.unlock()
                handler(sig == SIGTERM ? 2 : c)
            }
            s.resume()
            sources.append(s)
        }
    }

    func cancel() { for s in sources { s.cancel() } }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a protocol (and its rig and profiles) without touching any device.")
    @Argument(help: "Protocol file (YAML).") var protocolFile: String
    @Option(name: .long, help: "Rig file to check against instead of the protocol's rig.") var rig: String?
    @Option(
        name: .long,
        help: "Also write the protocol's time, z and channels as a useq-schema MDASequence (YAML) here.")
    var toUseq: String?
    @OptionGroup var output: OutputOptions

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            try output.check(outputs: [toUseq], inputs: [protocolFile])
            let p = try AcquisitionProtocol.load(file: protocolFile, rigFile: rig)
            try AcquisitionPipeline.preflight(p)
            if let toUseq {
                try UseqSequence.export(p).write(toFile: toUseq, atomically: true, encoding: .utf8)
                print("useq MDASequence (time, z, channels; SIM geometry in metadata.moire) written to \(toUseq)")
            }
            print(
                "\(protocolFile): OK — \(p.mode.rawValue) on '\(p.rig.name)', \(p.totalFrames) frames of \(p.roiWidth)×\(p.roiHeight), pixel \(String(format: "%.4f", p.pixelSizeUm)) µm"
            )
        } catch { throw fail(error) }
    }
}
