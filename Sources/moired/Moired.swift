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
        Runtime.prepareFFT()
        defer { Runtime.saveFFTWisdom() }
        let service: ControlService
        do { service = try ControlService(endpoint: control, logger: logger) } catch {
            logger.error("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        let group = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("moired listening", metadata: ["control": "\(service.endpoint)"])
        try await group.run()
        logger.info("moired stopped; devices safe")
    }
}

/// The daemon's one service: the control plane, shut down gracefully on SIGINT/SIGTERM.
// Sendable by hand: immutable references; DaemonController guards its own state with its lock.
final class ControlService: Service, @unchecked Sendable {
    let controller: DaemonController
    let endpoint: String
    private let logger: Logger

    init(endpoint: String, logger: Logger) throws {
        controller = try DaemonController(endpoint: endpoint, logger: logger)
        self.endpoint = controller.endpoint
        self.logger = logger
    }

    func run() async throws {
        controller.start()
        // Serves until the group shuts down gracefully (SIGINT/SIGTERM) or is cancelled.
        try? await gracefulShutdown()
        logger.info("shutting down: stopping any run")
        // Abort any run (devices safe) and let its thread close the recording.
        let controller = self.controller
        await Task.detached { controller.shutdown() }.value
    }
}
