import Foundation
import Logging
import MoireCore
import MoireTransport

/// A bus a stage reads: the raw bus, or another stage's output.
enum StageInput: Hashable, Sendable {
    case raw
    case output(of: String)
}

/// One counter of a stage, as the run's log and result show it.
public struct StageCounter: Sendable, Equatable {
    public var name: String
    public var value: Int
}

/// What a stage reports when the run is over: its counters (keyed by name, in its order), the
/// file it wrote (if any) and its typed counters for callers that know the stage.
public struct StageReport: Sendable {
    public var counters: [StageCounter]
    public var recording: String?
    /// Other files or folders it wrote, by what they hold (`checkpoints`, …).
    public var files: [String: String]
    public var details: (any Sendable)?

    public init(
        counters: [StageCounter] = [], recording: String? = nil, files: [String: String] = [:],
        details: (any Sendable)? = nil
    ) {
        self.counters = counters
        self.recording = recording
        self.files = files
        self.details = details
    }

    /// The counter named `name`, if the stage has one.
    public subscript(counter name: String) -> Int? { counters.first { $0.name == name }?.value }
}

/// One stage of the acquisition pipeline: it reads one or more buses (items handed to `receive`
/// on a reader thread the graph owns), may run workers of its own, and may publish derived frames
/// on its own output bus. Every stage ends its output with its own run `stop`, after the
/// input's.
protocol PipelineStage: AnyObject, Sendable {
    /// Its name in logs, thread names and the run's result.
    var name: String { get }
    /// Its bus of derived frames (nil: it publishes nothing).
    var output: RawBus? { get }
    /// One item from input `input` (an index into the inputs it was added with), on the reader
    /// thread. Returns false once it has read everything it needs (its inputs' stops).
    func receive(_ item: BusItem, fromInput input: Int) -> Bool
    /// Starts its workers; by then every reader of its output bus is connected.
    func start()
    /// Waits for its workers to end after its input stopped; false on timeout.
    func join(timeoutSeconds: Double) -> Bool
    /// How long its workers may take to finish after the run's stop.
    var finishSeconds: Double { get }
    /// Its figures, read after `join`.
    var report: StageReport { get }
}

/// A stage that can fall behind its input: under the clock's `.drop` it skips work it has no room
/// for (counted), under `.block` (virtual time) it waits. The graph sets it from the clock when the
/// stage is added.
protocol BackpressuredStage: PipelineStage {
    var backpressure: Backpressure { get set }
}

extension PipelineStage {
    var output: RawBus? { nil }
    func start() {}
    func join(timeoutSeconds: Double) -> Bool { true }
    var finishSeconds: Double { 120 }
}

/// The pipeline as a graph: stages and the buses between them. It owns the reader threads,
/// counts each bus's readers and waits for them before anything is published, starts the stages
/// in the order they were added, joins them, and collects their reports keyed by name. Adding a
/// stage is one type and one `add` line.
// Sendable by hand: built and run from one thread (the pipeline's); the readers own their stages' input.
final class PipelineGraph: @unchecked Sendable {
    private struct Node {
        let stage: any PipelineStage
        let inputs: [StageInput]
        var reader: BusReader?
    }

    let raw: RawBus
    private var nodes: [Node] = []
    private let logger: Logger

    /// What a stage that falls behind does (the clock's contract), given to every
    /// `BackpressuredStage` added.
    let backpressure: Backpressure

    init(raw: RawBus, backpressure: Backpressure, logger: Logger) {
        self.raw = raw
        self.backpressure = backpressure
        self.logger = logger
    }

    /// The stage named `name`, if added.
    func stage(named name: String) -> (any PipelineStage)? { nodes.first { $0.stage.name == name }?.stage }

    /// Adds `stage` reading `inputs` (the buses must exist: the raw bus, or stages added before).
    func add(_ stage: any PipelineStage, reading inputs: [StageInput]) throws {
        precondition(!nodes.contains { $0.stage.name == stage.name }, "two stages named \(stage.name)")
        _ = try inputs.map(endpoint(of:))
        if let backpressured = stage as? any BackpressuredStage {
            backpressured.backpressure = backpressure
        }
        nodes.append(Node(stage: stage, inputs: inputs))
    }

    /// Every bus so far: the raw bus, then each stage's output in the order added.
    var allBuses: [StageInput] {
        [.raw] + nodes.compactMap { $0.stage.output == nil ? nil : .output(of: $0.stage.name) }
    }

    private func endpoint(of input: StageInput) throws -> String {
        switch input {
        case .raw:
            return raw.endpoint
        case .output(let name):
            guard let bus = stage(named: name)?.output else {
                throw MoireError(.usage, "no stage '\(name)' with an output bus to read")
            }
            return bus.endpoint
        }
    }

    /// How many stages read `input`.
    private func readers(of input: StageInput) -> Int { nodes.filter { $0.inputs.contains(input) }.count }

    /// Connects every reader, waits until each bus sees all of its readers, and starts the stages
    /// in the order added. Nothing has been published on any bus yet.
    func start() throws {
        for index in nodes.indices {
            let node = nodes[index]
            let reader = try BusReader(
                name: node.stage.name, endpoints: node.inputs.map(endpoint(of:)),
                receive: { [stage = node.stage] item, input in stage.receive(item, fromInput: input) })
            nodes[index].reader = reader
            reader.start()
        }
        try raw.waitForSubscribers(readers(of: .raw))
        for node in nodes {
            if let bus = node.stage.output {
                let count = readers(of: .output(of: node.stage.name))
                if count > 0 { try bus.waitForSubscribers(count) }
            }
            node.stage.start()
        }
    }

    /// Waits for every reader and stage to end after the run's stop; logs what did not.
    func join() {
        for node in nodes {
            if let reader = node.reader, !reader.join(timeoutSeconds: 120) {
                logger.error("stage did not read to its stop", metadata: ["stage": "\(node.stage.name)"])
            }
        }
        for node in nodes where !node.stage.join(timeoutSeconds: node.stage.finishSeconds) {
            logger.error("stage did not finish", metadata: ["stage": "\(node.stage.name)"])
        }
    }

    /// Every stage's report, keyed by stage name (after `join`), each also logged.
    func reports() -> [String: StageReport] {
        var reports: [String: StageReport] = [:]
        for node in nodes {
            let report = node.stage.report
            reports[node.stage.name] = report
            guard !report.counters.isEmpty else { continue }
            var metadata: Logger.Metadata = [:]
            for counter in report.counters { metadata[counter.name] = "\(counter.value)" }
            logger.info("stage \(node.stage.name)", metadata: metadata)
        }
        return reports
    }
}

/// A thread that reads one or more buses until its stage says stop, handing each item (with the
/// index of the bus it came from) to the stage.
// Sendable by hand: immutable after init; its thread alone reads the subscribers; `done` signals the end.
final class BusReader: @unchecked Sendable {
    let name: String
    private let subscribers: [BusSubscriber]
    private let done = DispatchSemaphore(value: 0)
    private let receive: (BusItem, Int) -> Bool

    /// `receive` returns false to end the reader.
    init(name: String, endpoints: [String], receive: @escaping (BusItem, Int) -> Bool) throws {
        self.name = name
        subscribers = try endpoints.map { try BusSubscriber(endpoint: $0) }
        self.receive = receive
    }

    /// The thread is not kept: a stored thread whose closure holds the reader would keep it, its
    /// sockets and its stage alive after the run.
    func start() {
        let thread = Thread { [self] in
            defer { done.signal() }
            // One bus: block on it; several: take one item from each in turn (none starves).
            let waitMs = subscribers.count == 1 ? 200 : 2
            while true {
                for (index, subscriber) in subscribers.enumerated() {
                    while let item = try? subscriber.next(timeoutMs: waitMs) {
                        if !receive(item, index) { return }
                        if subscribers.count > 1 { break }
                    }
                }
            }
        }
        thread.name = "moire.stage.\(name)"
        thread.start()
    }

    /// Waits for the reader to end; false on timeout.
    func join(timeoutSeconds: Double) -> Bool {
        done.wait(timeout: .now() + timeoutSeconds) == .success
    }
}
