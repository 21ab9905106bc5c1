import ArgumentParser
import Foundation
import Logging
import MoireAcquisition
import MoireConfig
import MoireCore
import MoirePipeline
import MoireTransport
import ServiceLifecycle

@main
struct Moired: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "moired", abstract: "The Moiré acquisition daemon.")

    @Option(name: .long, help: "Control endpoint (REP, JSON).") var control = "tcp://127.0.0.1:5561"
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "moired")
        let service: ControlService
        do { service = try ControlService(endpoint: control, logger: logger) } catch {
            logger.error("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        let group = ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("moired listening", metadata: ["control": "\(service.endpoint)"])
        try await group.run()
        logger.info("moired stopped; devices safe")
    }
}

/// Serves the control endpoint and runs one acquisition at a time.
final class ControlService: Service, @unchecked Sendable {
    let server: ControlServer
    let endpoint: String
    private let logger: Logger
    private let lock = NSLock()
    private var pipeline: AcquisitionPipeline?
    private var lastResult: PipelineResult?
    private var lastRun: String?
    private var runThread: Thread?
    private var lastError: String?

    init(endpoint: String, logger: Logger) throws {
        server = try ControlServer(endpoint: endpoint)
        self.endpoint = server.endpoint
        self.logger = logger
    }

    func run() async throws {
        let t = Thread { [self] in server.serve { self.handle($0) } }
        t.name = "moired.control"
        t.start()
        await withGracefulShutdownHandler {
            while !Task.isCancelled && !Task.isShuttingDownGracefully { try? await Task.sleep(for: .milliseconds(100)) }
        } onGracefulShutdown: { [self] in
            logger.info("shutting down: stopping any run")
            lock.lock(); let p = pipeline; lock.unlock()
            p?.runner.abort()
            server.stop()
        }
        let p = currentPipeline()
        p?.runner.abort()
        p?.devices.makeSafe()
        // Let the run thread close the recording.
        for _ in 0..<100 {
            if currentPipeline() == nil { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    private func currentPipeline() -> AcquisitionPipeline? {
        lock.lock(); defer { lock.unlock() }
        return pipeline
    }

    private func handle(_ req: ControlRequest) -> ControlReply {
        switch req.cmd {
        case "ping": return ControlReply(ok: true, state: status().state)
        case "status": return status()
        case "stop":
            lock.lock(); let p = pipeline; lock.unlock()
            p?.runner.requestStop()
            return ControlReply(ok: true, state: p?.runner.state.rawValue ?? "idle")
        case "start": return start(req)
        default: return ControlReply(ok: false, error: "unknown command '\(req.cmd)'; expected start, stop, status or ping")
        }
    }

    private func status() -> ControlReply {
        lock.lock(); defer { lock.unlock() }
        if let p = pipeline {
            let pr = p.runner.currentProgress
            return ControlReply(ok: true, state: pr.state.rawValue, run: p.runID, frames: pr.done, missing: pr.missing, planned: pr.planned,
                                recording: p.recordingPath, publish: p.proto.outputs.publish)
        }
        if let r = lastResult {
            return ControlReply(ok: true, error: r.run.error?.description ?? lastError, state: r.run.reason == "fault" ? "faulted" : "idle",
                                run: r.runID, frames: r.run.delivered + r.run.missing, missing: r.run.missing, planned: r.run.planned)
        }
        return ControlReply(ok: true, error: lastError, state: "idle", run: lastRun)
    }

    private func start(_ req: ControlRequest) -> ControlReply {
        lock.lock(); defer { lock.unlock() }
        guard pipeline == nil else { return ControlReply(ok: false, error: "a run is in progress", state: "acquiring") }
        guard let file = req.protocolFile else { return ControlReply(ok: false, error: "start needs protocolFile") }
        do {
            let proto = try AcquisitionProtocol.load(file: file)
            var o = PipelineOptions()
            o.recordingPath = req.out
            let p = try AcquisitionPipeline(protocol: proto, options: o, logger: logger)
            pipeline = p
            lastRun = p.runID
            let t = Thread { [self] in
                var result: PipelineResult?
                var err: String?
                do { result = try p.run() } catch { err = "\(error)" }
                lock.lock(); pipeline = nil; lastResult = result; lastError = err; lock.unlock()
            }
            t.name = "moired.run"
            t.start()
            return ControlReply(ok: true, state: "arming", run: p.runID, planned: proto.totalFrames, recording: p.recordingPath,
                                publish: proto.outputs.publish)
        } catch {
            return ControlReply(ok: false, error: "\(error)")
        }
    }
}
