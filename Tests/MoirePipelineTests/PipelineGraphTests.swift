import Foundation
import Logging
import MoireCore
import MoireTransport
import Testing

@testable import MoirePipeline

/// A stage that counts what it reads and, with an output, passes every frame on as a derived
/// `sr` frame, ending its output with its own stop once all of its inputs have stopped.
// Sendable by hand: its counters are written by its reader thread only and read after the graph's join.
private final class CountingStage: BackpressuredStage, @unchecked Sendable {
    let name: String
    var backpressure = Backpressure.drop
    let output: RawBus?
    private let inputCount: Int
    private(set) var frames = 0
    private(set) var framesByInput: [Int: Int] = [:]
    private(set) var starts = 0
    private(set) var stops = 0
    private(set) var started = false

    init(name: String, inputs: Int = 1, publishes: Bool) throws {
        self.name = name
        inputCount = inputs
        output = publishes ? try RawBus() : nil
    }

    func start() { started = true }

    var report: StageReport {
        StageReport(counters: [StageCounter(name: "frames", value: frames), StageCounter(name: "stops", value: stops)])
    }

    func receive(_ item: BusItem, fromInput input: Int) -> Bool {
        switch item {
        case .frame(let header, _):
            frames += 1
            framesByInput[input, default: 0] += 1
            var derived = header
            derived.stream = "sr"
            try? output?.publish(Frame(header: derived, slot: nil))
            return true
        case .run(.start, let json):
            starts += 1
            try? output?.publishRun(json)
            return true
        case .run(.stop(let stop), _):
            stops += 1
            guard stops == inputCount else { return true }
            var own = stop
            own.frames = frames
            try? output?.publishRun(Wire.encode(own))
            return false
        }
    }
}

@Suite struct PipelineGraphTests {
    /// Every stage reads every frame published right after `start()` (the graph waited for each
    /// bus's readers: a frame sent before a reader connects would be lost), a stage reads another's
    /// output, a stage with two inputs ends only after both stops, and the reports come back by name;
    /// each stage added takes the graph's backpressure (the clock's).
    @Test func everyReaderSeesEveryFrameAndReportsComeBackByName() throws {
        let raw = try RawBus()
        let graph = PipelineGraph(raw: raw, backpressure: .block, logger: Logger(label: "test.graph"))
        let first = try CountingStage(name: "first", publishes: true)
        let second = try CountingStage(name: "second", publishes: false)
        let both = try CountingStage(name: "both", inputs: 2, publishes: false)
        try graph.add(first, reading: [.raw])
        try graph.add(second, reading: [.output(of: "first")])
        #expect(graph.allBuses == [.raw, .output(of: "first")])
        try graph.add(both, reading: graph.allBuses)
        #expect(throws: MoireError.self) {
            try graph.add(CountingStage(name: "orphan", publishes: false), reading: [.output(of: "second")])
        }
        try graph.start()
        #expect(first.started && second.started && both.started)
        #expect([first, second, both].allSatisfy { $0.backpressure == .block })

        let frames = 200
        let start = RunStart(
            run: "g", protocolName: "graph", protocolFile: "-", mode: "widefield", rig: "-", objectiveNA: 1.4,
            magnification: 100, channels: [], shape: [:], pixel: .uint16, pixelSizeUm: 0.1, startedNs: 0)
        try raw.publishRun(Wire.encode(start))
        for seq in 0..<frames {
            let header = FrameHeader(
                run: "g", seq: seq, index: seq, t: seq, channel: "gfp", c: 0, angle: 0, phase: 0, z: 0, width: 4,
                height: 4, pixelSizeUm: 0.1, missing: true)
            try raw.publish(Frame(header: header, slot: nil))
        }
        let stop = RunStop(
            run: "g", reason: "completed", error: nil, frames: frames, missing: 0, planned: frames, stoppedNs: 0)
        try raw.publishRun(Wire.encode(stop))
        graph.join()

        let reports = graph.reports()
        #expect(reports["first"]?[counter: "frames"] == frames)
        #expect(reports["second"]?[counter: "frames"] == frames)
        #expect(reports["both"]?[counter: "frames"] == 2 * frames)
        #expect(both.framesByInput == [0: frames, 1: frames])
        #expect(reports["both"]?[counter: "stops"] == 2 && second.stops == 1)
        #expect(first.starts == 1 && second.starts == 1 && both.starts == 2)
    }

    /// A run message is decoded once, where it is read: typed start and stop, and a message that is
    /// neither is refused as malformed with what was wrong.
    @Test func runMessagesAreDecodedOnceAndUnknownOnesRefused() throws {
        let stop = RunStop(run: "r", reason: "fault", error: "x", frames: 3, missing: 1, planned: 4, stoppedNs: 9)
        #expect(try RunMessage.decode(Wire.encode(stop)) == .stop(stop))
        #expect(throws: MoireError.self) { try RunMessage.decode(Data(#"{"event":"pause","run":"r"}"#.utf8)) }
        #expect(throws: MoireError.self) { try RunMessage.decode(Data(#"{"event":"start","run":"r"}"#.utf8)) }
    }
}
