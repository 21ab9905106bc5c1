import Foundation
import MoireAcquisition
import MoireConfig
import MoireDenoise
import MoireCore
import MoireHardware
import MoirePipeline
import MoireReconstruction
import MoireStorage
import MoireTesting
import MoireTransport
import Testing

/// A loopback endpoint on a port the system picks; the pipeline reads the bound one back.
let loopbackAnyPort = "tcp://127.0.0.1:*"

/// Collects a result bus's items up to the run's `stop`, from the moment the publisher is bound.
// Sendable by hand: fields written by the collecting thread before `done` is signalled, read only after.
final class BusCollector: @unchecked Sendable {
    // `items` and `failure` are written by the collecting thread before `done` is signalled and read after.
    private let topics: [String]
    private let timeoutMs: Int
    private var items: [BusItem] = []
    private var failure: Error?
    private let done = DispatchSemaphore(value: 0)

    /// `timeoutMs`: the hang watchdog between two items.
    init(topics: [String], timeoutMs: Int) {
        self.topics = topics.contains("") || topics.contains("run") ? topics : topics + ["run"]
        self.timeoutMs = timeoutMs
    }

    /// Connects to `endpoint` and collects on a thread of its own.
    func start(endpoint: String) {
        let subscriber: BusSubscriber
        do { subscriber = try BusSubscriber(endpoint: endpoint, topics: topics) } catch {
            failure = error
            done.signal()
            return
        }
        Thread { [self] in
            defer { done.signal() }
            while let item = try? subscriber.next(timeoutMs: timeoutMs) {
                if case .run(_, let json) = item, (try? JSONDecoder().decode(RunEvent.self, from: json))?.event == "stop" {
                    items.append(item)
                    return
                }
                items.append(item)
            }
        }.start()
    }

    /// Waits for the `stop` (or the watchdog) and returns what came.
    func finish() throws -> [BusItem] {
        done.wait()
        if let failure { throw failure }
        return items
    }
}

/// Runs `pipe` (publishing on `loopbackAnyPort`, waiting for one subscriber) while a subscriber
/// collects every item up to the run's `stop`.
/// The float32 frames among bus items, with their headers.
func floatFrames(_ items: [BusItem]) -> [(FrameHeader, [Float])] {
    items.compactMap { item in
        guard case .frame(let h, let payload) = item else { return nil }
        return (h, payload.withUnsafeBytes { bytes in bytes.withMemoryRebound(to: Float.self) { Array($0) } })
    }
}

func runListening(_ pipe: AcquisitionPipeline, topics: [String] = [""], timeoutMs: Int = 20_000) throws -> (PipelineResult, [BusItem]) {
    let collector = BusCollector(topics: topics, timeoutMs: timeoutMs)
    pipe.onPublisherBound = { collector.start(endpoint: $0) }
    let r = try pipe.run()
    return (r, try collector.finish())
}

@Suite(.serialized) struct PipelineTests {
    let dir = Fixtures.tempDir("pipeline")

    @Test func endToEndRecordsEveryFrameAndPublishesContiguousSequences() throws {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 3))
        let endpoint = loopbackAnyPort
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/e2e.ome.tif"
        o.publishEndpoint = endpoint
        o.waitForSubscribers = 1
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, received) = try runListening(pipe, timeoutMs: 8000)
        var items: [String] = [], seqs: [Int] = []
        for item in received {
            switch item {
            case .run(_, let json): items.append((try? JSONDecoder().decode(RunEvent.self, from: json))?.event ?? "?")
            case .frame(let h, let payload): if h.stream == "raw", payload.count == h.byteCount { seqs.append(h.seq) }
            }
        }
        #expect(r.run.reason == "completed" && r.run.delivered == 27)
        #expect(r.recording?.planes == 27 && r.recordingError == nil)
        #expect(items.last == "stop")
        #expect(seqs.last == 26)
        #expect(zip(seqs.dropFirst(), seqs).allSatisfy { $0 == $1 + 1 })
        let reader = try OMETiffReader(path: "\(dir)/e2e.ome.tif")
        #expect(reader.planeCount == 27)
        #expect(reader.planeRecords()?.map(\.header.state.pattern) == EventPlan(p).events.map(\.pattern))
        #expect(pipe.devices.isSafe)
    }

    /// A protocol that states `recording_format: ome-zarr` records an `--out` path without a
    /// suffix as an OME-Zarr store (the SR stream beside it too), and refuses one ending `.ome.tif`
    /// before any device is opened.
    @Test func aStatedRecordingFormatAppliesToTheOutPath() throws {
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(
                in: dir, timepoints: 2, extra: "outputs: {recording_format: ome-zarr}\nreconstruction: {record: true}"))
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/stated"
        o.noPublish = true
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        #expect(pipe.recordingPath == "\(dir)/stated.ome.zarr")
        let r = try pipe.run()
        #expect(r.recording?.planes == 18 && r.recordingError == nil)
        #expect(try OMEZarrContents.read(path: "\(dir)/stated.ome.zarr").planes.count == 18)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/stated.sr.ome.zarr"))
        o.recordingPath = "\(dir)/clash.ome.tif"
        #expect(throws: MoireError.self) { try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()) }
    }

    @Test func replayFixtureReproducesTheGoldenValues() throws {
        struct Golden: Decodable { var planes: Int; var pixelSums: [Int]; var patterns: [Int] }
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: URL(fileURLWithPath:
            Fixtures.path("sim-hardware/recordings/replay-fixture.golden.json"))))
        let out = "\(dir)/replayed.ome.tif"
        let r = try ReplaySession.run(recording: Fixtures.path("sim-hardware/recordings/replay-fixture.ome.tif"),
                                      protocolFile: Fixtures.path("sim-hardware/protocols/replay-fixture.yaml"), out: out) { _ in }
        #expect(r.run.reason == "completed" && r.run.stateMismatches == 0 && r.run.missing == 0)
        let reader = try OMETiffReader(path: out)
        #expect(reader.planeCount == golden.planes)
        let sums = try (0..<reader.planeCount).map { Int(try reader.readPlaneFloat($0).reduce(0, +)) }
        #expect(sums == golden.pixelSums)
        #expect(reader.planeRecords()?.map(\.header.state.pattern) == golden.patterns)
    }

    @Test func replayAgainstTheWrongPlanReportsMismatches() throws {
        // The fixture was acquired with sim488; replaying it against a protocol that plans sim560 patterns must be noticed.
        let text = try String(contentsOfFile: Fixtures.path("sim-hardware/protocols/replay-fixture.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "pattern_set: sim488", with: "pattern_set: sim560")
            .replacingOccurrences(of: "../rigs/multisim.yaml", with: Fixtures.path("sim-hardware/rigs/multisim.yaml"))
        let proto = Fixtures.write(text, to: "wrong-plan.yaml", in: dir)
        let r = try ReplaySession.run(recording: Fixtures.path("sim-hardware/recordings/replay-fixture.ome.tif"), protocolFile: proto) { _ in }
        #expect(r.run.stateMismatches == 18)
    }

    @Test func recorderFailureStopsTheRunAndLeavesHardwareSafe() throws {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: 64, timepoints: 2))
        var o = PipelineOptions()
        o.recordingPath = "/proc/moire-cannot-write-here.ome.tif"
        o.noPublish = true
        #expect(throws: MoireError.self) { _ = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run() }
    }

    @Test func pythonExampleDecodesEveryFrameFromTheDocsAlone() throws {
        guard pythonHas("zmq") else {
            Issue.record("python3 with pyzmq and numpy is needed (make deps installs them)")
            return
        }
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 4))
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let pipe = Pipe()
        proc.standardOutput = pipe
        var o = PipelineOptions()
        o.waitForSubscribers = 1
        o.subscriberWaitMs = 120_000  // a hang watchdog: Python starts slowly on a loaded machine
        o.noRecording = true
        o.publishEndpoint = loopbackAnyPort
        let pipeline = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        pipeline.onPublisherBound = { endpoint in
            proc.arguments = ["python3", Fixtures.path("examples/python/subscribe.py"), endpoint, "120"]
            try? proc.run()
        }
        let r = try pipeline.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        proc.waitUntilExit()
        #expect(proc.terminationStatus == 0)
        let last = try #require(out.split(separator: "\n").last)
        struct Summary: Decodable { var first: String; var frames: Int; var missing: Int; var gaps: Int; var streams: [String: Int] }
        let s = try JSONDecoder().decode(Summary.self, from: Data(last.utf8))
        #expect(s.first == "start" && s.gaps == 0 && s.missing == 0)
        #expect(s.streams["raw"] == r.run.delivered)
        #expect(s.streams["sr"] == r.sim?.reconstructed && s.streams["wf"] == r.sim?.reconstructed)
    }

    private func pythonHas(_ module: String) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import \(module), numpy"]
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}

@Suite(.serialized) struct DaemonControllerTests {
    let dir = Fixtures.tempDir("daemon")

    func call(_ c: DaemonController, _ r: ControlRequest) throws -> ControlReply {
        try #require(try ControlClient.call(c.endpoint, r, timeoutMs: 60_000))
    }

    /// Polls the daemon's status until `done` holds (a hang watchdog of two minutes, not a speed check).
    func awaitStatus(_ c: DaemonController, until done: (ControlReply) -> Bool) throws -> ControlReply {
        let watchdog = Date(timeIntervalSinceNow: 120)
        var status = try call(c, ControlRequest(cmd: "status"))
        while !done(status) && Date() < watchdog {
            usleep(20_000)
            status = try call(c, ControlRequest(cmd: "status"))
        }
        return status
    }

    @Test func startRunsToTheEndAndStatusReportsIt() throws {
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint())
        c.makePipeline = { try AcquisitionPipeline(protocol: $0, options: $1, clock: VirtualClock(), logger: $2) }
        c.start()
        defer { c.shutdown() }
        let proto = Fixtures.smallProtocol(in: dir, timepoints: 2)
        let started = try call(c, ControlRequest(cmd: "start", protocolFile: proto, out: "\(dir)/d.ome.tif"))
        #expect(started.ok && started.planned == 18)
        let s = try awaitStatus(c) { $0.state == "idle" && $0.frames == 18 }
        #expect(s.state == "idle" && s.frames == 18 && s.run == started.run)
        #expect(try OMETiffReader(path: "\(dir)/d.ome.tif").planeCount == 18)
    }

    /// The result bus is closed when a run ends: a second run on the same publish endpoint binds it
    /// again and completes, with its recording (the security issue's R1).
    @Test func twoRunsBackToBackOnOnePublishEndpointBothComplete() throws {
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint())
        c.makePipeline = { try AcquisitionPipeline(protocol: $0, options: $1, clock: VirtualClock(), logger: $2) }
        c.start()
        defer { c.shutdown() }
        let endpoint = "ipc://\(dir)/results-\(UUID().uuidString.prefix(6))"
        let proto = Fixtures.smallProtocol(in: dir, timepoints: 2, extra: "outputs: {publish: \"\(endpoint)\"}")
        for run in 0..<2 {
            let out = "\(dir)/back-to-back-\(run).ome.tif"
            let started = try call(c, ControlRequest(cmd: "start", protocolFile: proto, out: out))
            #expect(started.ok, "run \(run): \(started.error ?? "")")
            let s = try awaitStatus(c) { $0.state == "idle" && $0.run == started.run && ($0.frames == 18 || $0.error != nil) }
            #expect(s.frames == 18 && s.error == nil, "run \(run): \(s)")
            // A subscriber that missed the end learns it here: the last seq of each topic, the message count.
            #expect(s.lastSeq?["raw.gfp"] == 17 && (s.published ?? 0) >= 20, "run \(run): \(s)")
            #expect(try OMETiffReader(path: out).planeCount == 18)
        }
    }

    @Test func badProtocolIsRefusedWithItsPlace() throws {
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint())
        c.start()
        defer { c.shutdown() }
        let bad = Fixtures.write("moire: 1\nname: x\nmode: nonsense\n", to: "bad.yaml", in: dir)
        let r = try call(c, ControlRequest(cmd: "start", protocolFile: bad))
        #expect(!r.ok && r.error?.contains("bad.yaml:") == true)
        #expect(c.current == nil)
        let u = try call(c, ControlRequest(cmd: "launch"))
        #expect(!u.ok && u.error?.contains("unknown command") == true)
    }

    @Test func secondStartIsRefusedAndShutdownLeavesDevicesSafe() throws {
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint())
        c.makePipeline = { try AcquisitionPipeline(protocol: $0, options: $1, clock: VirtualClock(), logger: $2) }
        c.start()
        let proto = Fixtures.smallProtocol(in: dir, roi: 128, timepoints: 200, exposureMs: 5)
        let first = try call(c, ControlRequest(cmd: "start", protocolFile: proto, out: "\(dir)/long.ome.tif"))
        #expect(first.ok)
        let second = try call(c, ControlRequest(cmd: "start", protocolFile: proto))
        #expect(!second.ok && second.error?.contains("in progress") == true)
        let running = try #require(c.current)
        _ = try awaitStatus(c) { ($0.frames ?? 0) >= 5 }
        c.shutdown()
        #expect(c.current == nil)
        #expect(running.devices.isSafe)
        let idx = try RecordingIndex.read(path: RecordingIndex.path(for: "\(dir)/long.ome.tif"))
        #expect(idx.closed && idx.entries.count >= 5)
    }

    /// The security issue's R9: an existing recording is never replaced without `overwrite`, in
    /// process and through the daemon; the file is left as it was.
    @Test func anExistingRecordingIsNotOverwrittenWithoutBeingTold() throws {
        let proto = Fixtures.smallProtocol(in: dir, roi: 64, timepoints: 1)
        let p = try AcquisitionProtocol.load(file: proto)
        let existing = "\(dir)/existing.ome.tif"
        try Data("irreplaceable".utf8).write(to: URL(fileURLWithPath: existing))
        var o = PipelineOptions()
        o.recordingPath = existing
        o.noPublish = true
        do {
            _ = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
            Issue.record("a pipeline was made over an existing file")
        } catch let e as MoireError {
            #expect(e.place == existing && e.message.contains("--overwrite"), "\(e)")
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "irreplaceable")
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint())
        c.makePipeline = { try AcquisitionPipeline(protocol: $0, options: $1, clock: VirtualClock(), logger: $2) }
        c.start()
        defer { c.shutdown() }
        let refused = try call(c, ControlRequest(cmd: "start", protocolFile: proto, out: existing))
        #expect(!refused.ok && (refused.error ?? "").contains("--overwrite"), "\(refused)")
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "irreplaceable")
        // Told to, the run replaces it with a recording.
        o.overwrite = true
        let r = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
        let replaced = try OMETiffReader(path: existing).planeCount
        #expect(r.run.reason == "completed" && replaced == p.totalFrames)
        // A replay is never recorded over the recording it replays, overwrite or not.
        do {
            _ = try ReplaySession.run(recording: existing, out: existing, overwrite: true) { _ in }
            Issue.record("a replay was recorded over its source")
        } catch let e as MoireError {
            #expect(e.message.contains("cannot be recorded over"), "\(e)")
        }
        let kept = try OMETiffReader(path: existing).planeCount
        #expect(kept == p.totalFrames)
    }

    @Test func runAbortedBeforeAnyFrameLeavesNoFile() throws {
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint())
        c.makePipeline = { try AcquisitionPipeline(protocol: $0, options: $1, clock: VirtualClock(), logger: $2) }
        c.start()
        let proto = Fixtures.smallProtocol(in: dir, roi: 128, timepoints: 5)
        #expect(try call(c, ControlRequest(cmd: "start", protocolFile: proto, out: "\(dir)/none.ome.tif")).ok)
        c.shutdown()
        // Either some frames made it (a valid file) or none did (no file at all): never an empty TIFF.
        if FileManager.default.fileExists(atPath: "\(dir)/none.ome.tif") {
            #expect(try OMETiffReader(path: "\(dir)/none.ome.tif").planeCount > 0)
        }
    }
}

@Suite(.serialized) struct LiveSIMTests {
    let dir = Fixtures.tempDir("livesim")

    func run(_ extra: String, faults: [CameraFault] = [], record: String? = nil) throws -> (PipelineResult, [FrameHeader]) {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: 128, timepoints: 4, exposureMs: 5, extra: extra))
        let endpoint = loopbackAnyPort
        var o = PipelineOptions()
        o.recordingPath = record
        o.noRecording = record == nil
        o.publishEndpoint = endpoint
        o.waitForSubscribers = 1
        o.faults = faults
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, items) = try runListening(pipe, topics: ["sr.", "run"])
        let headers = items.compactMap { item -> FrameHeader? in
            if case .frame(let h, let payload) = item, payload.count == h.byteCount { return h }
            return nil
        }
        return (r, headers)
    }

    @Test func srFramesCarryTheirInputsAndParameters() throws {
        let (r, headers) = try run("")
        let c = try #require(r.sim)
        // The first estimation takes several sets' time: the sets wait in the backlog, none is skipped.
        #expect(c.setsComplete == 4 && c.reconstructed == 4 && c.skippedBehind == 0, "\(c)")
        #expect(headers.count == c.reconstructed && r.derivedPublished == 2 * c.reconstructed)
        for (i, h) in headers.enumerated() {
            #expect(h.stream == "sr" && h.seq == i && h.width == 256 && h.pixel == .float32)
            #expect(h.inputs?.count == 9 && h.inputs == Array((h.t * 9)..<(h.t * 9 + 9)))
            #expect(h.params?["angle0.k"] != nil && h.params?["angle2.modulation"] != nil)
            #expect(h.params?["wiener"] == "auto" && Double(h.params?["wiener.atCutoff"] ?? "") != nil, "\(h.params ?? [:])")
        }
        #expect(r.run.missing == 0)
    }

    @Test func aSetWithAMissingFrameIsSkippedNeverReconstructedWrong() throws {
        let (r, headers) = try run("", faults: [.dropFrame(13)])
        let c = try #require(r.sim)
        #expect(c.skippedMissing == 1 && c.setsComplete == 3)
        #expect(!headers.contains { $0.t == 1 })
        #expect(r.run.missing == 1 && r.run.delivered == 35)
    }

    @Test func srFramesAreRecordedWhenAsked() throws {
        let (r, _) = try run("reconstruction: {record: true, estimate: \"every:2\"}", record: "\(dir)/raw.ome.tif")
        let path = try #require(r.srRecording)
        let reader = try OMETiffReader(path: path)
        #expect(reader.pixel == .float32 && reader.width == 256)
        #expect(reader.planeRecords()?.filter(\.acquired).count == r.sim?.reconstructed)
    }

    /// Recording has priority for derived streams too: an SR recording that cannot be written stops
    /// the run as a fault with the recording's name, devices safe and the raw recording valid.
    @Test func anSRRecordingThatCannotBeWrittenStopsTheRunSafely() throws {
        let raw = "\(dir)/blocked.ome.tif"
        let blocked = "\(dir)/blocked.sr.ome.tif"
        try? FileManager.default.removeItem(atPath: raw)
        try FileManager.default.createDirectory(atPath: blocked, withIntermediateDirectories: true)
        let (r, _) = try run("reconstruction: {record: true}", record: raw)
        #expect(r.run.reason == "fault", "\(r.run)")
        let error = try #require(r.recordingError)
        #expect(error.place?.contains("blocked.sr.ome.tif") == true, "\(error)")
        #expect(r.run.error?.place == error.place)
        #expect(try OMETiffReader(path: raw).planeCount > 0)
    }

    /// A frame the camera lost reaches the raw recorder as a missing frame (no payload) and is
    /// recorded as such, beside the complete ones: the recording is whole and says which one.
    @Test func aLostFrameIsRecordedAsMissing() throws {
        let raw = "\(dir)/lost.ome.tif"
        try? FileManager.default.removeItem(atPath: raw)
        let (r, _) = try run("", faults: [.dropFrame(5)], record: raw)
        #expect(r.run.reason == "completed" && r.run.missing == 1, "\(r.run)")
        let reader = try OMETiffReader(path: raw)
        let records = try #require(reader.planeRecords())
        #expect(records.count == 36 && records.filter(\.acquired).count == 36)
        #expect(records.enumerated().filter { $0.element.header.missing }.map(\.offset) == [5])
    }

    @Test func badReconstructionOptionsAreRejectedWithTheirPlace() throws {
        for (extra, field) in [("reconstruction: {wiener: lots}", "reconstruction.wiener"), ("reconstruction: {estimate: sometimes}", "reconstruction.estimate"),
                               ("reconstruction: {sharpen: true}", "unknown field 'sharpen'")] {
            do { _ = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, extra: extra)); Issue.record("accepted \(extra)") }
            catch let e as MoireError {
                #expect(e.message.contains(field))
                #expect(e.place?.contains(".yaml:") == true)
            }
        }
    }
}

@Suite(.serialized) struct OfflineSIMTests {
    let dir = Fixtures.tempDir("offline")

    func record(_ name: String) throws -> String {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: 128, timepoints: 2, exposureMs: 5))
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/\(name).ome.tif"
        o.noPublish = true
        o.noReconstruction = true
        _ = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
        return o.recordingPath!
    }

    @Test func recordingReconstructsWithEverythingFromItsMetadata() throws {
        let path = try record("rec")
        let r = try OfflineSIM().run(input: path)
        #expect(r.sr.count == 2 && r.width == 128)
        #expect(r.parameters[0].angles.allSatisfy { $0.source == "estimated" && !$0.flagged })
        try OfflineSIM.write(r, to: "\(dir)/sr.ome.tif", name: "sr")
        let reader = try OMETiffReader(path: "\(dir)/sr.ome.tif")
        #expect(reader.planeCount == 2 && reader.width == 256 && reader.pixel == .float32)
        let png = OfflineSIM.preview(r)
        #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
    }

    @Test func frameOrderInconsistentWithTheHeadersIsAnError() throws {
        let path = try record("swapped")
        // Rewrite the recording with planes 1 and 2 swapped (headers travel with their pixels).
        let reader = try OMETiffReader(path: path)
        let recs = try #require(reader.planeRecords())
        let layout = try #require(reader.layout)
        let out = "\(dir)/swapped-out.ome.tif"
        let w = try OMETiffWriter(path: out, layout: layout)
        for i in 0..<reader.planeCount {
            let src = i == 1 ? 2 : (i == 2 ? 1 : i)
            var h = recs[src].header
            h.index = i
            let px = try reader.readPlaneFloat(src).map { UInt16($0) }
            try px.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        try w.finish()
        do { _ = try OfflineSIM().run(input: out); Issue.record("accepted a swapped frame order") } catch let e as MoireError {
            #expect(e.message.contains("frame order is inconsistent"))
        }
    }

    @Test func otfThatDoesNotFitThePixelSizeIsAnError() throws {
        guard let data = Fixtures.sharedData else { Issue.record("../shared/data is needed"); return }
        var job = OfflineSIM()
        job.na = 1.3; job.emissionNm = 525; job.options.background = 100
        job.otfFile = "\(data)/rdl-sim-microtubules/otf-tirf488-radial.mrc"
        job.pixelUm = 0.5  // ten times too coarse for this OTF
        do { _ = try job.run(input: "\(data)/rdl-sim-microtubules/raw-3x3-microtubules.mrc"); Issue.record("accepted") } catch let e as MoireError {
            #expect(e.message.contains("does not fit"))
        }
        var short = OfflineSIM()
        short.angles = 3; short.phases = 4; short.na = 1.3; short.emissionNm = 525
        do { _ = try short.run(input: "\(data)/rdl-sim-microtubules/raw-3x3-microtubules.mrc"); Issue.record("accepted 9 frames as 3×4") } catch let e as MoireError {
            #expect(e.message.contains("not a whole number"))
        }
    }
}

@Suite struct OfflineDenoiseTests {
    @Test func recordingIsDenoisedWithItsCamerasNoiseModel() throws {
        let dir = Fixtures.tempDir("den")
        var job = OfflineDenoise()
        job.firstSteps = 10; job.adaptSteps = 1; job.crop = 32
        job.noise = .fixed(NoiseModel(offset: 100, gain: 0.46, readVariance: 0.41))
        let r = try job.run(input: Fixtures.path("sim-hardware/recordings/replay-fixture.ome.tif"))
        #expect(r.frames.count == 18 && r.width == 64 && r.skipped == 0)
        #expect(r.weightsVersions.first == 10 && r.weightsVersions.last == 27)
        try OfflineDenoise.write(r, to: "\(dir)/den.ome.tif", name: "den")
        let reader = try OMETiffReader(path: "\(dir)/den.ome.tif")
        #expect(reader.planeCount == 18 && reader.pixel == .float32)
        #expect(reader.planeRecords()?.last?.header.t == 17)
    }

    /// One plane has no history: the single-frame network denoises it unless the context or a weights
    /// file was chosen; a stack keeps the temporal network.
    @Test func aSinglePlaneGetsTheSingleFrameNetworkUnlessTheUserChose() throws {
        let dir = Fixtures.tempDir("denone")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = 32
        for (i, offset) in [0, 3].enumerated() {
            let plane = (0..<(w * w)).map { UInt8(20 + ($0 * 7 + offset) % 50) }
            try PNGWriter.encode(width: w, height: w, pixels: plane).write(to: URL(fileURLWithPath: "\(dir)/f\(i).png"))
        }
        var job = OfflineDenoise()
        job.firstSteps = 1
        job.adaptSteps = 1
        job.crop = 32
        job.noise = .fixed(NoiseModel(offset: 10, gain: 1, readVariance: 1))
        #expect(try job.run(input: "\(dir)/f0.png").network == .frame)
        #expect(try job.run(input: dir).network == .frameAndHistory)
        job.input = .frameAndHistory
        #expect(try job.run(input: "\(dir)/f0.png").network == .frameAndHistory)
        job.input = nil
        job.start = .scratch
        #expect(try job.run(input: "\(dir)/f0.png").network == .frame)
    }

    /// A lone frame has nothing after it to adapt on: from the shipped model it adapts briefly and
    /// keeps the model's gain, where the stack's long warm-up fits that frame's noise and loses it
    /// (a simulated 20-photon widefield frame of the rig, 8-bit lossless).
    @Test func aLoneFrameAdaptsBrieflyAndKeepsTheShippedModelsGain() throws {
        let dir = Fixtures.tempDir("denlone")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d = try Fixtures.simulateWidefield(roi: 128, powerMw: 10, exposureMs: 0.5, count: 1, seed: 7)
        let frame = d.frames[0]
        try #require(frame.allSatisfy { $0 >= 0 && $0 < 256 }, "the frame fits 8 bits without loss")
        let path = "\(dir)/lone.png"
        try PNGWriter.encode(width: 128, height: 128, pixels: frame.map { UInt8($0) })
            .write(to: URL(fileURLWithPath: path))
        var job = OfflineDenoise()
        job.noise = .fixed(NoiseModel(offset: d.offset, gain: d.gain, readVariance: d.readVariance))
        let brief = ImageMetrics.psnr(try job.run(input: path).frames[0], truth: d.truth)
        job.firstSteps = 0
        let frozen = ImageMetrics.psnr(try job.run(input: path).frames[0], truth: d.truth)
        job.firstSteps = 200
        let long = ImageMetrics.psnr(try job.run(input: path).frames[0], truth: d.truth)
        let raw = ImageMetrics.psnr(frame, truth: d.truth)
        print(String(format: "lone frame: raw %.2f, frozen %.2f, 50 steps %.2f, 200 steps %.2f dB", raw, frozen, brief, long))
        #expect(brief >= frozen - 0.1)
        #expect(brief > long)
    }

    @Test func aRepeatedFrameRepeatsItsDenoisedCopyAndTeachesNothing() throws {
        let dir = Fixtures.tempDir("denrep")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = 32, h = 32
        let first = (0..<(w * h)).map { UInt8(20 + ($0 * 7) % 50) }
        let second = (0..<(w * h)).map { UInt8(22 + ($0 * 5) % 45) }
        for (i, p) in [first, first, second].enumerated() {
            try PNGWriter.encode(width: w, height: h, pixels: p).write(to: URL(fileURLWithPath: "\(dir)/f\(i).png"))
        }
        var job = OfflineDenoise()
        job.firstSteps = 3; job.adaptSteps = 2
        job.noise = .fixed(NoiseModel(offset: 10, gain: 1, readVariance: 1))
        let r = try job.run(input: dir)
        #expect(r.frames[1] == r.frames[0])
        // No adaptation on the repeat: versions 3, 3, then 5.
        #expect(r.weightsVersions == [3, 3, 5])
    }

    @Test func saturatedAndBlankFramesArePassedThroughAndCounted() throws {
        let dir = Fixtures.tempDir("densat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = 32, h = 32
        let normal = (0..<(w * h)).map { UInt8(20 + ($0 * 7) % 50) }
        let planes = [normal, [UInt8](repeating: 255, count: w * h), normal, [UInt8](repeating: 0, count: w * h)]
        for (i, p) in planes.enumerated() {
            try PNGWriter.encode(width: w, height: h, pixels: p).write(to: URL(fileURLWithPath: "\(dir)/f\(i).png"))
        }
        var job = OfflineDenoise()
        job.firstSteps = 2; job.adaptSteps = 1
        job.noise = .fixed(NoiseModel(offset: 10, gain: 1, readVariance: 1))
        let r = try job.run(input: dir)
        #expect(r.frames.count == 4 && r.skipped == 2)
        #expect(r.frames[1] == planes[1].map(Float.init) && r.frames[3] == planes[3].map(Float.init))
        #expect(r.frames[0].allSatisfy(\.isFinite) && r.frames[0] != planes[0].map(Float.init))
    }

    @Test func oddEvenAndNeighbourPairsAndTheDeconvolutionTermRunOnARecording() throws {
        let dir = Fixtures.tempDir("denpairs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, mode: "widefield", roi: 64, timepoints: 9,
                                                                    exposureMs: 0.3))
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/rec.ome.tif"; o.noPublish = true
        _ = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
        let reader = try OMETiffReader(path: "\(dir)/rec.ome.tif")
        let raw = try reader.readPlaneFloat(0)
        // The static specimen's mean over the other frames is the reference: denoising brings frame 0 closer to it.
        let others = try (1..<9).map { try reader.readPlaneFloat($0) }
        let reference = (0..<raw.count).map { i in others.map { $0[i] }.reduce(0, +) / Float(others.count) }
        func distance(_ f: [Float]) -> Double { zip(f, reference).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(f.count) }
        for pairs in OfflineDenoise.Pairs.allCases {
            var job = OfflineDenoise()
            job.pairs = pairs; job.firstSteps = 60; job.adaptSteps = 1; job.learningRate = 2e-3
            let r = try job.run(input: "\(dir)/rec.ome.tif")
            #expect(r.frames.count == 9 && r.skipped == 0)
            print("pairs \(pairs): distance \(distance(r.frames[0])) raw \(distance(raw))")
            #expect(distance(r.frames[0]) < 0.8 * distance(raw), "\(pairs): \(distance(r.frames[0])) vs raw \(distance(raw))")
        }
        #expect(OfflineDenoise.partner(of: 4, count: 5) == 3 && OfflineDenoise.partner(of: 2, count: 5) == 3 && OfflineDenoise.partner(of: 1, count: 5) == 0)
        // The deconvolution term's PSF comes from the recording's optics (NA, emission, pixel size).
        var job = OfflineDenoise()
        job.deconvolve = true
        let loss = try job.deconvolutionLoss(input: "\(dir)/rec.ome.tif", pixelUm: nil)
        let expected = try DeconvolutionLoss.widefield(na: p.rig.optics.objectiveNA, emissionNm: 525, pixelUm: p.pixelSizeUm)
        #expect(loss.size == expected.size && loss.psf == expected.psf)
        job.firstSteps = 5; job.adaptSteps = 0
        #expect(try job.run(input: "\(dir)/rec.ome.tif").frames[0].allSatisfy { $0.isFinite })
        // A plain file has no optics: a clear error unless the PSF is given.
        try PNGWriter.encode(width: 32, height: 32, pixels: [UInt8](repeating: 9, count: 1024)).write(to: URL(fileURLWithPath: "\(dir)/x.png"))
        #expect(throws: MoireError.self) { _ = try job.deconvolutionLoss(input: "\(dir)/x.png", pixelUm: nil) }
    }

    @Test func firstFramesWarmUpUnlessTheStepsAreGiven() {
        var job = OfflineDenoise()
        job.adaptSteps = 5
        // From the shipped model: 200, 100, 66, 50, … until the per-frame steps take over.
        #expect((0..<5).map { job.schedule(frames: 61).steps(frame: $0) } == [200, 100, 66, 50, 40])
        #expect(job.schedule(frames: 61).steps(frame: 60) == 5)
        // A lone frame or a short run from the shipped model adapts briefly: 50 steps per frame.
        #expect(job.schedule(frames: 1).steps(frame: 0) == 50)
        #expect((0..<2).map { job.schedule(frames: 2).steps(frame: $0) } == [100, 50])
        #expect((0..<4).map { job.schedule(frames: 4).steps(frame: $0) } == [200, 100, 66, 50])
        job.start = .scratch
        job.input = .frame
        #expect(job.schedule(frames: 61).steps(frame: 0) == 300)
        #expect(job.schedule(frames: 1).steps(frame: 0) == 300)
        job.firstSteps = 7
        #expect((0..<3).map { job.schedule(frames: 3).steps(frame: $0) } == [7, 5, 5])
        #expect(job.schedule(frames: 1).steps(frame: 0) == 7)
    }

    @Test func cameraModelComesFromTheRecordingsProtocol() throws {
        let dir = Fixtures.tempDir("den2")
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: 64, timepoints: 1))
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/rec.ome.tif"; o.noPublish = true; o.noReconstruction = true
        _ = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
        var job = OfflineDenoise()
        job.firstSteps = 2; job.adaptSteps = 0
        let r = try job.run(input: "\(dir)/rec.ome.tif")
        let cam = p.rig.cameraProfile
        #expect(r.model == NoiseModel(offset: cam.offsetADU, gain: cam.gainADUPerE, readVariance: pow(cam.readNoiseE * cam.gainADUPerE, 2)))
    }
}

@Suite(.serialized) struct LiveDenoiseTests {
    @Test func everyFrameNamesItsWeightsVersionAndACheckpointReproducesIt() throws {
        let dir = Fixtures.tempDir("liveden")
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, mode: "widefield", roi: 64, timepoints: 12, exposureMs: 5,
                                                                    extra: "denoise: {steps_per_frame: 2, crop: 32, batch: 2, checkpoint_every: 1}"))
        let endpoint = loopbackAnyPort
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/raw.ome.tif"
        o.publishEndpoint = endpoint
        o.waitForSubscribers = 1
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, items) = try runListening(pipe, topics: ["den.", "run"], timeoutMs: 30_000)
        let frames = floatFrames(items)
        let c = try #require(r.denoise)
        // In virtual time a frame waits for the inference thread: every one is denoised and published.
        #expect(c.denoised == 12 && frames.count == 12 && c.skipped == 0 && c.refused == 0, "\(c)")
        let versions = frames.compactMap { $0.0.params?["weightsVersion"].flatMap(Int.init) }
        #expect(versions.count == frames.count && zip(versions.dropFirst(), versions).allSatisfy { $0 >= $1 })
        #expect(frames.allSatisfy { $0.0.stream == "den" && $0.0.inputs?.count == 1 })
        // Reproduce a published frame offline from the checkpoint of its weights version.
        let dirW = try #require(r.denoiseCheckpoints)
        let reader = try OMETiffReader(path: "\(dir)/raw.ome.tif")
        // The temporal context (the default for raw frames) is replayed from the den stream itself:
        // every denoised frame's raw input, in order, added to the running average after use.
        #expect(frames.allSatisfy { $0.0.params?["context"] == "history" })
        var reproduced = 0
        var context: TemporalContext?
        let d = Denoiser(engine: try DNNLEngine(), model: NoiseModel(camera: p.rig.cameraProfile), input: .frameAndHistory)
        for (h, px) in frames.sorted(by: { $0.0.seq < $1.0.seq }) {
            let v = try #require(h.params?["weightsVersion"].flatMap(Int.init))
            let scale = try #require(h.params?["scale"].flatMap(Float.init))
            try WeightsFile.load("\(dirW)/v\(v).bin", into: d.net)
            let raw = try reader.readPlaneFloat(h.inputs![0])
            d.context = context
            let again = try d.denoise(raw, width: 64, height: 64, scale: scale)
            context = d.context
            #expect(again == px, "frame \(h.seq) (weights v\(v)) is not reproduced exactly")
            reproduced += 1
        }
        #expect(reproduced == frames.count && reproduced >= 1)
        #expect(r.run.missing == 0 && r.recording?.planes == 12)
    }
}

/// `denoise: {noise: auto}`: the live stage measures the camera's noise from the run's first frames
/// instead of taking the profile's. The simulated camera here has spatially correlated noise (its
/// profile states `noise_correlation`, which the simulator applies); the measurement must find that
/// correlation and the gain, every frame must still be denoised, and a frame must be reproduced
/// from its checkpoint with the model written beside it.
@Suite(.serialized) struct LiveNoiseMeasurementTests {
    /// A copy of the simulated rig whose camera's noise has the correlation `lags` ("dx,dy": ρ).
    static func correlatedRig(in dir: String, lags: String) throws -> String {
        let profiles = Fixtures.path("sim-hardware/profiles")
        let camera = try String(contentsOfFile: profiles + "/camera-sim-scmos.yaml", encoding: .utf8)
        let correlated = camera.replacingOccurrences(
            of: "  full_well_e: 30000", with: "  full_well_e: 30000\n  noise_correlation: {\(lags)}")
        #expect(correlated != camera, "the camera profile's calibration block moved")
        try correlated.write(toFile: dir + "/camera-correlated.yaml", atomically: true, encoding: .utf8)
        let rig = try String(contentsOfFile: Fixtures.path("sim-hardware/rigs/multisim.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../profiles/camera-sim-scmos.yaml", with: dir + "/camera-correlated.yaml")
            .replacingOccurrences(of: "../profiles/", with: profiles + "/")
            .replacingOccurrences(of: "../specimens/", with: Fixtures.path("sim-hardware/specimens") + "/")
        try rig.write(toFile: dir + "/rig-correlated.yaml", atomically: true, encoding: .utf8)
        return dir + "/rig-correlated.yaml"
    }

    @Test func noiseAutoMeasuresTheCamerasCorrelatedNoiseLive() throws {
        let dir = Fixtures.tempDir("livenoise")
        // The correlation of 2 × 2 binning (a valid one: its power spectrum is nowhere negative).
        let rig = try Self.correlatedRig(
            in: dir, lags: "\"1,0\": 0.5, \"0,1\": 0.5, \"1,1\": 0.25, \"-1,1\": 0.25")
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(
                in: dir, mode: "widefield", roi: 128, timepoints: 8, exposureMs: 5,
                extra: "denoise: {noise: auto, steps_per_frame: 1, crop: 32, batch: 1, checkpoint_every: 1}",
                rig: rig))
        #expect(p.denoise.noise == .auto)
        let endpoint = loopbackAnyPort
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/raw.ome.tif"
        o.publishEndpoint = endpoint
        o.waitForSubscribers = 1
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, items) = try runListening(pipe, topics: ["den.", "run"], timeoutMs: 30_000)
        let frames = floatFrames(items)
        let c = try #require(r.denoise)
        #expect(c.denoised == 8 && frames.count == 8 && c.refused == 0, "\(c)")
        #expect(c.noiseSource.contains("measured from 4 frame(s) by frame differences"), "\(c.noiseSource)")
        #expect(frames.allSatisfy { $0.0.params?["noise"] == "auto" })
        let checkpoints = try #require(r.denoiseCheckpoints)
        let model = try JSONDecoder().decode(
            NoiseModel.self, from: Data(contentsOf: URL(fileURLWithPath: checkpoints + "/noise-model.json")))
        #expect(c.noiseModel == model.summary)
        let correlation = try #require(model.correlation, "correlated noise measured as pixel-independent")
        #expect(abs(correlation.rho(1, 0) - 0.5) < 0.1, "\(model.summary)")
        #expect(abs(correlation.rho(0, 1) - 0.5) < 0.1, "\(model.summary)")
        #expect(abs(correlation.rho(1, 1) - 0.25) < 0.1, "\(model.summary)")
        #expect(abs(correlation.rho(2, 0)) < 0.1, "\(model.summary)")
        let gain = p.rig.cameraProfile.gainADUPerE
        #expect(abs(model.gain - gain) < 0.2 * gain, "\(model.summary)")
        // The last frame, reproduced from its checkpoint with the measured model and its context.
        let reader = try OMETiffReader(path: "\(dir)/raw.ome.tif")
        let d = Denoiser(engine: try DNNLEngine(), model: model, input: .frameAndHistory)
        var context: TemporalContext?
        for (h, px) in frames.sorted(by: { $0.0.seq < $1.0.seq }) {
            let v = try #require(h.params?["weightsVersion"].flatMap(Int.init))
            let scale = try #require(h.params?["scale"].flatMap(Float.init))
            try WeightsFile.load("\(checkpoints)/v\(v).bin", into: d.net)
            d.context = context
            let again = try d.denoise(try reader.readPlaneFloat(h.inputs![0]), width: 128, height: 128, scale: scale)
            context = d.context
            #expect(again == px, "frame \(h.seq) (weights v\(v)) is not reproduced with the measured model")
        }
    }

    @Test func noiseAutoIsRefusedForSRFramesAndBadValuesNameTheirPlace() throws {
        let dir = Fixtures.tempDir("livenoisebad")
        do {
            _ = try AcquisitionProtocol.load(
                file: Fixtures.smallProtocol(in: dir, mode: "widefield", extra: "denoise: {noise: guess}"))
            Issue.record("noise: guess was accepted")
        } catch let e as MoireError {
            #expect(e.message.contains("noise must be camera or auto") && e.place?.contains(".yaml:") == true, "\(e)")
        }
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(in: dir, roi: 64, timepoints: 1, extra: "denoise: {noise: auto}"))
        var o = PipelineOptions()
        o.noPublish = true
        #expect(throws: MoireError.self) { try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run() }
    }
}

/// `denoise: {workers: 1}`: the network's inference of every raw frame runs at a worker (here a
/// thread of this process with its own oneDNN engine, over a real ipc socket) while adaptation,
/// context and normalisation stay in the stage; every frame comes back in order and equals what
/// its checkpoint gives in process, bit for bit.
@Suite(.serialized) struct LiveDenoiseOnWorkersTests {
    @Test func framesDenoisedByAWorkerEqualTheirCheckpointsInProcess() throws {
        let dir = Fixtures.tempDir("livedenw")
        let endpoint = "ipc://\(dir)/denwork.sock"
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(
                in: dir, mode: "widefield", roi: 64, timepoints: 10, exposureMs: 5,
                extra:
                    "denoise: {steps_per_frame: 2, crop: 32, batch: 2, checkpoint_every: 1, workers: 1, work_endpoint: \"\(endpoint)\"}"
            ))
        #expect(p.denoise.workers == .count(1))
        let processor = SIMWorkProcessor()
        let worker = try WorkWorker(endpoint: endpoint, name: "gpu0") { try processor.process($0) }
        try worker.start()
        defer { worker.stop() }
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/raw.ome.tif"
        o.publishEndpoint = loopbackAnyPort
        o.waitForSubscribers = 1
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, items) = try runListening(pipe, topics: ["den.", "run"], timeoutMs: 30_000)
        let frames = floatFrames(items).sorted { $0.0.seq < $1.0.seq }
        let c = try #require(r.denoise)
        #expect(c.denoised == 10 && frames.count == 10 && c.workerFailures == 0, "\(c)")
        #expect(c.framesByWorker == ["gpu0": 10], "\(c.framesByWorker)")
        #expect(frames.map { $0.0.inputs?.first } == (0..<10).map { Optional($0) })
        let versions = frames.compactMap { $0.0.params?["weightsVersion"].flatMap(Int.init) }
        // How many versions the run sees depends on how the adaptation thread is scheduled, so
        // only their order is asserted (as in process); every frame is checked against its own.
        #expect(versions.count == frames.count && zip(versions.dropFirst(), versions).allSatisfy { $0 >= $1 })
        let checkpoints = try #require(r.denoiseCheckpoints)
        let reader = try OMETiffReader(path: "\(dir)/raw.ome.tif")
        let d = Denoiser(engine: try DNNLEngine(), model: NoiseModel(camera: p.rig.cameraProfile), input: .frameAndHistory)
        var context: TemporalContext?
        for (h, px) in frames {
            let v = try #require(h.params?["weightsVersion"].flatMap(Int.init))
            let scale = try #require(h.params?["scale"].flatMap(Float.init))
            try WeightsFile.load("\(checkpoints)/v\(v).bin", into: d.net)
            d.context = context
            let again = try d.denoise(try reader.readPlaneFloat(h.inputs![0]), width: 64, height: 64, scale: scale)
            context = d.context
            #expect(again == px, "frame \(h.seq) (weights v\(v)) from the worker differs from in process")
        }
    }

    @Test func workersAreRefusedForSRFramesAndWithDeconvolution() throws {
        let dir = Fixtures.tempDir("livedenwbad")
        for (mode, extra) in [
            ("sim2d", "denoise: {workers: 1}"), ("widefield", "denoise: {workers: 1, deconvolve: true}"),
        ] {
            let p = try AcquisitionProtocol.load(
                file: Fixtures.smallProtocol(in: dir, mode: mode, roi: 64, timepoints: 1, extra: extra))
            var o = PipelineOptions()
            o.noPublish = true
            #expect(throws: MoireError.self) {
                try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
            }
        }
    }

    /// A warm-up on raw frames with temporal context would wait for adaptation, which trains on
    /// what inference saw: refused with the setting named.
    @Test func aWarmUpOnRawFramesWithHistoryIsRefused() throws {
        let dir = Fixtures.tempDir("livedenwarm")
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(
                in: dir, mode: "widefield", roi: 64, timepoints: 1, extra: "denoise: {first_steps: 10, context: history}"))
        var o = PipelineOptions()
        o.noPublish = true
        let error = try #require(throws: MoireError.self) {
            try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
        }
        #expect(error.message.contains("first_steps") && error.message.contains("context: none"), "\(error)")
    }
}

@Suite(.serialized) struct LiveDeconvolutionTests {
    /// `denoise: {deconvolve: true}`: a second network, adapted on the raw frames with the deconvolution
    /// term (the PSF from the rig's optics), publishes `dcv.<channel>` beside `den.<channel>`; every
    /// deconvolved frame names its weights version and is reproduced exactly from that checkpoint.
    @Test func deconvolvedFramesArePublishedAndReproducedFromTheirCheckpoints() throws {
        let dir = Fixtures.tempDir("livedcv")
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(
                in: dir, mode: "widefield", roi: 64, timepoints: 8, exposureMs: 5,
                extra: "denoise: {steps_per_frame: 2, crop: 32, batch: 1, checkpoint_every: 1, deconvolve: true}"))
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/raw.ome.tif"
        o.publishEndpoint = loopbackAnyPort
        o.waitForSubscribers = 1
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, items) = try runListening(pipe, topics: ["dcv.", "den."], timeoutMs: 60_000)
        let frames = floatFrames(items)
        let deconvolved = frames.filter { $0.0.stream == "dcv" }
        let c = try #require(r.denoise)
        #expect(c.deconvolved == deconvolved.count && deconvolved.count >= 1)
        #expect(frames.filter { $0.0.stream == "den" }.count == c.denoised)
        let expectedSigma = 0.21 * p.channels[0].emissionNm / 1000 / p.rig.optics.objectiveNA / p.pixelSizeUm
        let checkpoints = try #require(r.deconvolutionCheckpoints)
        let reader = try OMETiffReader(path: "\(dir)/raw.ome.tif")
        let d = Denoiser(engine: try DNNLEngine(), model: NoiseModel(camera: p.rig.cameraProfile), input: .frame)
        var versions: [Int] = []
        for (h, px) in deconvolved {
            let sigma = try #require(h.params?["psfSigmaPx"].flatMap(Double.init))
            #expect(abs(sigma - expectedSigma) < 1e-3)
            let v = try #require(h.params?["weightsVersion"].flatMap(Int.init))
            let scale = try #require(h.params?["scale"].flatMap(Float.init))
            try WeightsFile.load("\(checkpoints)/v\(v).bin", into: d.net)
            let raw = try reader.readPlaneFloat(h.inputs![0])
            #expect(try d.denoise(raw, width: 64, height: 64, scale: scale) == px, "dcv frame \(h.seq) (v\(v))")
            versions.append(v)
        }
        #expect(zip(versions.dropFirst(), versions).allSatisfy { $0 >= $1 })
        // The adaptation thread takes at least the last frame (it drains before it stops): version 1 exists.
        #expect(FileManager.default.fileExists(atPath: "\(checkpoints)/v1.bin"), "the deconvolver adapted")
    }

    @Test func liveDeconvolutionIsRefusedWithLiveSIM() throws {
        let dir = Fixtures.tempDir("livedcvsim")
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(in: dir, roi: 64, timepoints: 1, extra: "denoise: {deconvolve: true}"))
        var o = PipelineOptions()
        o.noPublish = true
        #expect(throws: MoireError.self) { _ = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run() }
    }
}

@Suite(.serialized) struct LiveOddEvenTests {
    /// `pairs: odd-even` trains each frame against the previous frame of the same plane: adaptation happens
    /// (from the second frame on) and headers name the method.
    @Test func oddEvenPairsAdaptLiveAndHeadersSaySo() throws {
        let dir = Fixtures.tempDir("liveoe")
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, mode: "widefield", roi: 64, timepoints: 8, exposureMs: 5,
                                                                    extra: "denoise: {steps_per_frame: 1, crop: 32, batch: 1, pairs: odd-even}"))
        let endpoint = loopbackAnyPort
        var o = PipelineOptions()
        o.publishEndpoint = endpoint
        o.waitForSubscribers = 1
        let (r, items) = try runListening(try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()),
                                          topics: ["den.", "run"], timeoutMs: 30_000)
        let headers = items.compactMap { item -> FrameHeader? in if case .frame(let h, _) = item { return h }; return nil }
        let c = try #require(r.denoise)
        // Adaptation runs beside inference (how many steps depends on the machine); in virtual time
        // every frame is denoised.
        #expect(c.adaptationSteps >= 1 && c.denoised == 8 && headers.count == 8, "\(c)")
        #expect(headers.allSatisfy { $0.params?["method"] == "odd-even-raw" })
        // A wrong pairs value is refused with its place.
        let bad = Fixtures.smallProtocol(in: dir, mode: "widefield", extra: "denoise: {pairs: sideways}")
        #expect(throws: MoireError.self) { _ = try AcquisitionProtocol.load(file: bad) }
    }
}

@Suite(.serialized) struct LiveSIMDenoiseTests {
    /// With live SIM, the SR frames are denoised (adapting on the phase sets by SR pairs): every `den.`
    /// frame is SR-sized, names its weights version, its SR frame and the parameters its input was
    /// reconstructed with, and is reproduced from the raw set: the set reconstructed with those
    /// parameters and the training pairs' constant Wiener parameter (not the published SR frame's
    /// adaptive filter), denoised with the checkpoint of its version.
    @Test func srFramesAreDenoisedLiveAndReproducibleFromTheirCheckpoint() throws {
        let dir = Fixtures.tempDir("livesimden")
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, mode: "sim2d", roi: 64, timepoints: 6, exposureMs: 5,
                                                                    extra: "denoise: {steps_per_frame: 2, first_steps: 12, crop: 64, batch: 1, checkpoint_every: 1}"))
        let endpoint = loopbackAnyPort
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/raw.ome.tif"
        o.publishEndpoint = endpoint
        o.waitForSubscribers = 1
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let (r, items) = try runListening(pipe, topics: ["den.", "sr.", "raw.", "run"], timeoutMs: 60_000)
        var raw: [Int: [Float]] = [:], sr: [Int: (FrameHeader, [Float])] = [:], den: [(FrameHeader, [Float])] = []
        for item in items {
            guard case .frame(let h, let payload) = item else { continue }
            switch h.stream {
            case "raw":
                raw[h.seq] = payload.withUnsafeBytes { b in b.withMemoryRebound(to: UInt16.self) { $0.map(Float.init) } }
            case "sr":
                sr[h.seq] = (h, payload.withUnsafeBytes { b in b.withMemoryRebound(to: Float.self) { Array($0) } })
            case "den":
                den.append((h, payload.withUnsafeBytes { b in b.withMemoryRebound(to: Float.self) { Array($0) } }))
            default: break
            }
        }
        let c = try #require(r.denoise)
        // In virtual time every set's SR frame is reconstructed and denoised.
        #expect(c.denoised == den.count && c.denoised == 6 && sr.count == 6 && c.adaptationSteps >= 2, "\(c)")
        #expect(den.allSatisfy { $0.0.width == 128 && $0.0.height == 128 && $0.0.params?["method"] == "sim-sr-pairs" })
        // The warm-up: no frame is denoised before the first 12 steps were taken and swapped in
        // (version 1; version 0 is the network from scratch).
        #expect(c.adaptationSteps >= 12, "\(c)")
        #expect(den.allSatisfy { ($0.0.params?["weightsVersion"].flatMap(Int.init) ?? 0) >= 1 },
                "\(den.map { $0.0.params?["weightsVersion"] ?? "" })")
        let dirW = try #require(r.denoiseCheckpoints)
        var o2 = SIM2DOptions()
        o2.background = p.rig.cameraProfile.offsetADU
        let rec = try SIM2DReconstructor(
            width: 64, height: 64, pixelUm: p.pixelSizeUm, angles: p.angles, phases: p.phases,
            otf: IdealOTF(na: p.rig.optics.objectiveNA, emissionNm: p.channels[0].emissionNm, attenuation: p.rig.otfAttenuation),
            options: o2)
        var reproduced = 0
        for (h, px) in den {
            guard let v = h.params?["weightsVersion"].flatMap(Int.init), let scale = h.params?["scale"].flatMap(Float.init),
                  let input = h.inputs?.first, let (srHeader, srPx) = sr[input],
                  let json = h.params?["inputParameters"], let rawSeqs = srHeader.inputs else { continue }
            #expect(h.params?["inputWiener"] == String(SIMDenoiser.inputWiener))
            let parameters = try JSONDecoder().decode(SIMParameters.self, from: Data(json.utf8))
            let set = try rawSeqs.map { try #require(raw[$0], "raw frame \($0)") }
            let networkInput = try SIMDenoiser.networkInput(set, parameters: parameters, with: rec)
            // The input is the set as the pairs are reconstructed, not the published SR frame.
            #expect(networkInput != srPx)
            let d = Denoiser(engine: try DNNLEngine(), model: SIMDenoiser.srModel)
            try WeightsFile.load("\(dirW)/v\(v).bin", into: d.net)
            let again = try d.denoise(networkInput, width: 128, height: 128, scale: scale)
            // Within float rounding: this reconstructor's transforms may be planned differently.
            let span = Double((px.max() ?? 0) - (px.min() ?? 0))
            let largest = zip(again, px).map { Double(abs($0 - $1)) }.max() ?? .infinity
            #expect(largest <= 1e-3 * span, "den frame \(h.seq) (v\(v)): largest difference \(largest) of \(span)")
            reproduced += 1
        }
        #expect(reproduced == den.count)
        #expect(r.run.missing == 0)
    }
}

/// Structure-aware fuzzing of the control plane over its real socket (the security issue's
/// deliverable 5): mutated requests (valid ones, wrong types, huge fields, broken JSON, extra
/// parts) each get an answer, nothing starts that should not, and the daemon serves on.
@Suite(.serialized) struct ControlFuzzTests {
    @Test func mutatedRequestsAreAnsweredAndStartNothing() throws {
        let dir = Fixtures.tempDir("control-fuzz")
        let c = try DaemonController(endpoint: Fixtures.privateControlEndpoint(), dataRoot: dir)
        c.makePipeline = { _, _, _ in throw MoireError(.state, "fuzzing: no run is made", place: "fuzz") }
        c.start()
        defer { c.shutdown() }
        let proto = Fixtures.smallProtocol(in: dir, timepoints: 1)
        let seeds: [[UInt8]] = [
            #"{"cmd":"ping"}"#, #"{"cmd":"status"}"#, #"{"cmd":"stop"}"#, #"{"cmd":"pause"}"#,
            #"{"cmd":"start","protocolFile":"\#(proto)","out":"\#(dir)/a.ome.tif","overwrite":true}"#,
            #"{"cmd":"start","protocolFile":"\#(proto)","out":"/etc/passwd"}"#,
            #"{"cmd":"start","protocolFile":"/proc/self/cmdline"}"#,
            #"{"cmd":"start","protocolFile":"\#(proto)","rig":"\#(proto)"}"#,
        ].map { Array($0.utf8) }
        var socket = try ZMQSocket(type: .req)
        try socket.connect(c.endpoint)
        var fuzzer = Fuzzer(seed: 0xF022_0201, maximumBytes: 80 * 1024)
        let report = fuzzer.campaign("control", seeds: seeds, count: Fuzzer.inputCount(fallback: 1500)) { input in
            try socket.send([.bytes(Data(input))])
            // A hang watchdog, not a speed check.
            guard try socket.poll(timeoutMs: 60_000) else {
                socket = try ZMQSocket(type: .req)
                try socket.connect(c.endpoint)
                throw ControlFuzzHang()
            }
            let reply = try JSONDecoder().decode(ControlReply.self, from: socket.receive()[0].data)
            guard reply.ok else {
                throw MoireError(.validation, reply.error ?? "refused without a reason", place: "control")
            }
        }
        print(report)
        #expect(report.unplacedErrors == 0, "\(report.unplacedExample ?? "")")
        #expect(report.hangs == 0)
        #expect(report.accepted > 0 && report.refused > 0)
        #expect(c.current == nil)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/a.ome.tif"))
        #expect(try ControlClient.call(c.endpoint, ControlRequest(cmd: "ping"))?.ok == true)
    }
}

private struct ControlFuzzHang: Error {}
