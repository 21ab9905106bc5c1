import ArgumentParser
import Foundation
import Logging
import Metrics
import MoireAcquisition
import MoireConfig
import MoireCore
import MoirePipeline
import MoireTransport
import Prometheus
import ServiceLifecycle

@main
struct Moired: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moired", abstract: "The Moiré acquisition daemon.", version: MoireVersion.string)

    static func main() async {
        Runtime.preferSleepingOpenMPThreads()
        Runtime.keepFreedMemoryForReuse()
        await main(nil)
    }

    @Option(
        name: .long,
        help: """
            Control endpoint (REP, JSON): an ipc:// socket only this user may use (default \
            \(ControlEndpoint.defaultEndpoint)), or tcp://HOST:PORT with CURVE keys.
            """)
    var control: String?
    @Option(name: .long, help: "Also let the members of this group command the daemon (ipc socket mode 0660).")
    var controlGroup: String?
    @Option(
        name: .long,
        help: "The daemon's CURVE secret key, for a tcp control endpoint (default KEYS/moired.key_secret).")
    var serverKey: String?
    @Option(
        name: .long,
        help: "Directory of the client public keys (*.key) allowed over tcp (default KEYS/authorized).")
    var authorizedKeys: String?
    @Option(name: .long, help: "Every recording must be under this directory (default: the current directory).")
    var dataRoot: String?
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"
    @Option(
        name: .long,
        help: """
            Prometheus metrics (HTTP GET /metrics): tcp://127.0.0.1:PORT on loopback (:* for any free \
            port), or none (default \(MetricsService.defaultEndpoint); when that port is taken the \
            daemon runs without metrics and says so).
            """)
    var metrics: String?

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
        let metricsService: MetricsService?
        do {
            metricsService = try MetricsService.start(endpoint: metrics, logger: logger)
            let (endpoint, access) = try controlEndpoint()
            let root = dataRoot ?? FileManager.default.currentDirectoryPath
            service = try ControlService(endpoint: endpoint, access: access, dataRoot: root, logger: logger)
        } catch {
            logger.error("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        var services: [any Service] = [service]
        if let metricsService { services.append(metricsService) }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info(
            "moired listening",
            metadata: [
                "control": "\(service.endpoint)", "access": "\(service.accessSummary)",
                "data.root": "\(service.controller.dataRoot ?? "-")",
                "metrics": "\(metricsService?.endpoint.url ?? "-")",
            ])
        // Ready: the control socket is bound and answering (systemd's Type=notify waits for this).
        SystemdNotify.send("READY=1\nSTATUS=listening on \(service.endpoint)\nMAINPID=\(getpid())")
        try await group.run()
        // The last run's subscribers still get its tail and stop (each bus drains for a bounded time).
        ResultPublisher.awaitClosedBuses()
        logger.info("moired stopped; devices safe")
    }

    /// The control endpoint and who may use it.
    private func controlEndpoint() throws -> (String, ControlAccess) {
        let endpoint = control ?? ControlEndpoint.defaultEndpoint
        if control == nil { try ControlEndpoint.prepareDefaultDirectory() }
        if endpoint.hasPrefix("tcp://") {
            guard controlGroup == nil else {
                throw MoireError(.usage, "--control-group is for an ipc endpoint; tcp clients are named by their keys")
            }
            let keys = CurveKeyFile.defaultDirectory
            let server = try CurveKeyFile.readSecret(serverKey ?? keys + "/moired.key_secret")
            let clients = try CurveKeyFile.readAllowList(authorizedKeys ?? keys + "/authorized")
            guard !clients.isEmpty else {
                throw MoireError(
                    .config, "no authorized client keys (*.key): no one could command the daemon",
                    place: authorizedKeys ?? keys + "/authorized")
            }
            return (endpoint, .curve(server: server, authorizedClients: clients))
        }
        guard serverKey == nil, authorizedKeys == nil else {
            throw MoireError(.usage, "--server-key and --authorized-keys are for a tcp endpoint")
        }
        guard let controlGroup else { return (endpoint, .localUser()) }
        guard let group = getgrnam(controlGroup) else {
            throw MoireError(.usage, "no group named '\(controlGroup)'", place: "--control-group")
        }
        return (endpoint, .localUser(group: group.pointee.gr_gid))
    }
}

/// The daemon's one service: the control plane, shut down gracefully on SIGINT/SIGTERM.
/// Immutable references; DaemonController guards its own state with its lock.
final class ControlService: Service, Sendable {
    let controller: DaemonController
    let endpoint: String
    private let logger: Logger

    init(endpoint: String, access: ControlAccess, dataRoot: String, logger: Logger) throws {
        controller = try DaemonController(endpoint: endpoint, access: access, dataRoot: dataRoot, logger: logger)
        self.endpoint = controller.endpoint
        self.logger = logger
        switch access {
        case .localUser(let group): accessSummary = group.map { "this user and group \($0)" } ?? "this user only"
        case .curve(_, let clients): accessSummary = "CURVE, \(clients.count) authorized client keys"
        case .inProcess: accessSummary = "in process"
        }
    }

    /// Who may command, in words for the log.
    let accessSummary: String

    func run() async throws {
        controller.start()
        // Serves until the group shuts down gracefully (SIGINT/SIGTERM) or is cancelled.
        try? await gracefulShutdown()
        SystemdNotify.send("STOPPING=1\nSTATUS=stopping any run; devices to safe state")
        logger.info("shutting down: stopping any run")
        // Abort any run (devices safe) and let its thread close the recording.
        let controller = self.controller
        await Task.detached { controller.shutdown() }.value
    }
}

/// The Prometheus scrape endpoint: swift-metrics bootstrapped with swift-prometheus's registry,
/// served by `MetricsEndpoint` until the daemon shuts down.
/// Immutable references; the endpoint guards its own state.
final class MetricsService: Service, Sendable {
    static let defaultEndpoint = "tcp://127.0.0.1:9464"
    let endpoint: MetricsEndpoint

    private init(endpoint: MetricsEndpoint) { self.endpoint = endpoint }

    /// Bootstraps the metrics backend and binds `endpoint` (nil: the default); nil for `none`.
    /// An endpoint given that is not loopback tcp, or cannot be bound, is refused with its reason;
    /// the default port being taken only costs the metrics (a warning).
    static func start(endpoint given: String?, logger: Logger) throws -> MetricsService? {
        guard given != "none" else { return nil }
        let text = given ?? defaultEndpoint
        let registry = PrometheusCollectorRegistry()
        do {
            let endpoint = try MetricsEndpoint(endpoint: text) { registry.emitToString() }
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            logger.info("metrics at \(endpoint.url)")
            return MetricsService(endpoint: endpoint)
        } catch  where given == nil {
            logger.warning("no metrics endpoint", metadata: ["endpoint": "\(text)", "error": "\(error)"])
            return nil
        }
    }

    func run() async throws {
        try? await gracefulShutdown()
        let endpoint = self.endpoint
        await Task.detached { endpoint.stop() }.value
    }
}
