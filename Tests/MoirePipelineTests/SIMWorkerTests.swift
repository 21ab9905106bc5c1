import Foundation
import MoireConfig
import MoireCore
import MoirePipeline
import MoireReconstruction
import MoireStorage
import MoireTesting
import MoireTransport
import Testing

/// Live 2D-SIM with `reconstruction.workers`: the sets go through the broker to worker processes
/// (here, workers on threads of this process, over a real ipc socket) and come back in order.
@Suite(.serialized) struct SIMWorkerTests {
    let dir = Fixtures.tempDir("simworkers")

    /// Runs 12 time points, SR recorded, with `extra` in the protocol; `during` is called while
    /// the run goes on (on another thread) with the run's pipeline.
    func run(_ name: String, extra: String) throws -> (PipelineResult, [[Float]], [FrameHeader]) {
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(in: dir, roi: 64, timepoints: 12, exposureMs: 5, extra: extra))
        var options = PipelineOptions()
        options.recordingPath = "\(dir)/\(name).ome.tif"
        options.noPublish = true
        let result = try AcquisitionPipeline(protocol: p, options: options, clock: VirtualClock()).run()
        let reader = try OMETiffReader(path: try #require(result.srRecording))
        let planes = try (0..<reader.planeCount).map { try reader.readPlaneFloat($0) }
        return (result, planes, try #require(reader.planeRecords()).map(\.header))
    }

    /// Two workers share the sets; the SR frames equal those reconstructed in process, bit for
    /// bit; the run's result says how many sets each worker did. One worker then dies mid-run
    /// with a set in hand: every set is still reconstructed exactly once, in order.
    @Test func workersReconstructEverySetOnceInOrderEvenWhenOneDies() throws {
        let inProcess = try run("local", extra: "reconstruction: {record: true}")
        #expect(inProcess.1.count == 12)

        let endpoint = "ipc://\(dir)/work.sock"
        let extra = "reconstruction: {record: true, workers: 2, work_endpoint: \"\(endpoint)\"}"
        // These two write their results straight into the memory they share with the broker;
        // the two below hand theirs over to be copied there.
        var workers = try (0..<2).map { index in
            let processor = SIMWorkProcessor()
            let resultMemory = WorkResultMemory()
            return try WorkWorker(endpoint: endpoint, name: "w\(index)", resultMemory: resultMemory) {
                try processor.process($0, resultMemory: resultMemory)
            }
        }
        for worker in workers { try worker.start() }
        let shared = try run("shared", extra: extra)
        for worker in workers { worker.stop() }
        let c = try #require(shared.0.sim)
        #expect(c.reconstructed == 12 && c.workerFailures == 0, "\(c)")
        #expect(c.setsByWorker.values.reduce(0, +) == 12 && c.setsByWorker.keys.allSatisfy { $0.hasPrefix("w") })
        #expect(c.setsThroughSharedMemory == 12, "\(c)")
        #expect(shared.1 == inProcess.1, "SR frames from workers differ from those made in process")
        #expect(shared.2.map(\.inputs) == inProcess.2.map(\.inputs))

        // A worker that dies (as a killed process does: no answer, no goodbye) with a set in hand.
        // The steady worker holds its first set until the doomed one has one, so the doomed
        // worker gets a set whatever the machine's load; it is killed while holding it.
        let doomedCount = Counter()
        let killRequested = Counter()
        let steadyProcessor = SIMWorkProcessor()
        let steady = try WorkWorker(endpoint: endpoint, name: "steady") { item in
            let deadline = Date().addingTimeInterval(120)
            while doomedCount.value < 1, Date() < deadline { usleep(1000) }
            return try steadyProcessor.process(item)
        }
        let doomedProcessor = SIMWorkProcessor()
        let doomed = try WorkWorker(endpoint: endpoint, name: "doomed") { item in
            doomedCount.add()
            let deadline = Date().addingTimeInterval(120)
            while killRequested.value < 1, Date() < deadline { usleep(1000) }
            // The kill marks the worker crashed at once; its answer is then never sent.
            usleep(100_000)
            return try doomedProcessor.process(item)
        }
        workers = [steady, doomed]
        for worker in workers { try worker.start() }
        let killer = Thread {
            let deadline = Date().addingTimeInterval(120)
            while doomedCount.value < 1, Date() < deadline { usleep(1000) }
            killRequested.add()
            doomed.crash()
        }
        killer.start()
        let survived = try run("survived", extra: extra)
        steady.stop()
        doomed.crash()
        #expect(doomedCount.value >= 1, "the doomed worker never got a set")
        let s = try #require(survived.0.sim)
        #expect(s.reconstructed == 12 && s.workerFailures == 0, "\(s)")
        #expect(survived.2.map(\.t) == Array(0..<12))
        #expect(survived.1 == inProcess.1)
        #expect(s.setsByWorker.values.reduce(0, +) == 12, "\(s.setsByWorker)")
    }
}

extension SIMWorkerTests {
    /// Live 3D-SIM with two workers: every stack's volume comes back in order, equal to the
    /// volume made in process, and the run's result says how many each worker did. (Two time
    /// points: in process, a third would replace the second while the first is reconstructed.)
    @Test func sim3dStacksOnWorkersEqualThoseMadeInProcess() throws {
        let text = try String(contentsOfFile: Fixtures.path("sim-hardware/protocols/sim3d-cell.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../rigs/sim3d.yaml", with: Fixtures.path("sim-hardware/rigs/sim3d.yaml"))
            .replacingOccurrences(of: "roi: [128, 128]", with: "roi: [64, 64]")
            .replacingOccurrences(of: "planes: 16", with: "planes: 8")
            .replacingOccurrences(of: "count: 1", with: "count: 2")
        let endpoint = "ipc://\(dir)/work3d.sock"
        func run(_ name: String, workers: Bool) throws -> (PipelineResult, [[Float]]) {
            let extra = workers ? "record: true\n  workers: 2\n  work_endpoint: \"\(endpoint)\"" : "record: true"
            let p = try AcquisitionProtocol.load(
                file: Fixtures.write(
                    text.replacingOccurrences(of: "record: true", with: extra), to: "\(name).yaml", in: dir))
            var options = PipelineOptions()
            options.recordingPath = "\(dir)/\(name).ome.tif"
            options.noPublish = true
            let result = try AcquisitionPipeline(protocol: p, options: options, clock: VirtualClock()).run()
            let reader = try OMETiffReader(path: try #require(result.sim3dRecording))
            return (result, try (0..<reader.planeCount).map { try reader.readPlaneFloat($0) })
        }
        let local = try run("local3d", workers: false)
        let workers = try (0..<2).map { index in
            let processor = SIMWorkProcessor()
            return try WorkWorker(endpoint: endpoint, name: "v\(index)") { try processor.process($0) }
        }
        for worker in workers { try worker.start() }
        let shared = try run("shared3d", workers: true)
        for worker in workers { worker.stop() }
        let c = try #require(shared.0.sim3d)
        #expect(c.volumes == 2 && c.workerFailures == 0, "\(c)")
        #expect(local.0.sim3d?.volumes == 2, "\(String(describing: local.0.sim3d))")
        #expect(c.stacksByWorker.values.reduce(0, +) == 2, "\(c.stacksByWorker)")
        let differences = zip(shared.1, local.1).map { a, b in zip(a, b).map { abs($0 - $1) }.max() ?? 0 }
        #expect(
            shared.1.count == 2 * 8 && shared.1 == local.1,
            "volumes from workers differ from in process: \(differences)")
    }

    /// Mode llsm with `reconstruction: {workers: 2}`: every stack is deskewed and deconvolved by a
    /// worker (its planes, geometry, PSF model and a missing plane travel with it), the volumes come
    /// back in order and are recorded equal to the ones made in process.
    @Test func lightSheetStacksOnWorkersEqualThoseMadeInProcess() throws {
        let text = try String(contentsOfFile: Fixtures.path("sim-hardware/protocols/lattice-beads.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../rigs/lattice.yaml", with: Fixtures.path("sim-hardware/rigs/lattice.yaml"))
            .replacingOccurrences(of: "roi: [256, 128]", with: "roi: [64, 32]")
            .replacingOccurrences(of: "planes: 100", with: "planes: 16")
            .replacingOccurrences(of: "count: 2", with: "count: 3")
            .replacingOccurrences(of: "iterations: 10", with: "iterations: 3")
            .replacingOccurrences(of: "  recording: ../../demo-output/lattice.ome.tif\n", with: "")
        let endpoint = "ipc://\(dir)/workllsm.sock"
        func run(_ name: String, workers: Bool) throws -> (PipelineResult, [[Float]]) {
            let extra = workers ? "reconstruction: {workers: 2, work_endpoint: \"\(endpoint)\"}\n" : ""
            let p = try AcquisitionProtocol.load(file: Fixtures.write(text + extra, to: "\(name).yaml", in: dir))
            var options = PipelineOptions()
            options.recordingPath = "\(dir)/\(name).ome.tif"
            options.noPublish = true
            // Plane 5 of the second stack never comes: filled with the stack's background on both sides.
            options.faults = [.dropFrame(16 + 5)]
            let result = try AcquisitionPipeline(protocol: p, options: options, clock: VirtualClock()).run()
            let reader = try OMETiffReader(path: try #require(result.volumeRecording))
            return (result, try (0..<reader.planeCount).map { try reader.readPlaneFloat($0) })
        }
        let local = try run("localllsm", workers: false)
        let workers = try (0..<2).map { index in
            let processor = SIMWorkProcessor()
            return try WorkWorker(endpoint: endpoint, name: "ls\(index)") { try processor.process($0) }
        }
        for worker in workers { try worker.start() }
        let shared = try run("sharedllsm", workers: true)
        for worker in workers { worker.stop() }
        let c = try #require(shared.0.volumes)
        #expect(c.volumes == 3 && c.workerFailures == 0 && c.missingPlanes == 1, "\(c)")
        #expect(local.0.volumes?.volumes == 3 && local.0.volumes?.stacksByWorker == [:])
        #expect(c.stacksByWorker.values.reduce(0, +) == 3, "\(c.stacksByWorker)")
        #expect(c.stacksByWorker.keys.allSatisfy { $0.hasPrefix("ls") }, "\(c.stacksByWorker)")
        let differences = zip(shared.1, local.1).map { a, b in zip(a, b).map { abs($0 - $1) }.max() ?? 0 }
        #expect(
            shared.1.count == local.1.count && !shared.1.isEmpty && shared.1 == local.1,
            "volumes from workers differ from in process: \(differences)")
    }

    /// A light-sheet job that does not describe itself consistently is refused with what is wrong.
    @Test func inconsistentLightSheetJobsAreRefused() throws {
        let optics = try LightSheetOptics(na: 1.0, immersionIndex: 1.33, emissionNm: 520, sheetThicknessUm: 1)
        let job = LightSheetJob(
            width: 16, height: 8, depth: 4, angleDeg: 31.8, stepUm: 0.4, pixelUm: 0.104, iterations: 0,
            background: nil, rotate: false, missing: [], optics: optics)
        let planes = [[Float]](repeating: [Float](repeating: 100, count: 16 * 8), count: 4)
        let processor = SIMWorkProcessor()
        let good = try processor.process(try job.item(planes: planes, measuredPSF: nil))
        #expect(try LightSheetJob.volume(of: good).height == 8)
        var badParts = try job.item(planes: planes, measuredPSF: nil).parts
        badParts[2] = badParts[2].prefix(100)
        var outOfRange = job
        outOfRange.missing = [7]
        var noPSF = job
        noPSF.optics = nil
        for (item, what) in [
            (WorkItem(sequence: 1, parts: badParts), "bytes of planes"),
            (try outOfRange.item(planes: planes, measuredPSF: nil), "16×8×4"),
            (try noPSF.item(planes: planes, measuredPSF: nil), "no measured PSF"),
        ] {
            do {
                _ = try processor.process(item)
                Issue.record("accepted a job with \(what)")
            } catch let error as MoireError {
                #expect(error.message.contains(what), "\(error.message)")
            }
        }
    }

    /// A worker keeps one reconstructor per geometry (not one per set), its results equal an
    /// in-process reconstruction of the same set, and a job that does not describe itself
    /// consistently is refused with what is wrong.
    @Test func aWorkerReusesItsReconstructorAndRefusesInconsistentJobs() throws {
        let options = SIM2DOptions()
        let reconstructor = try SIM2DReconstructor(
            width: 64, height: 64, pixelUm: 0.065, angles: 3, phases: 3, otf: IdealOTF(na: 1.49, emissionNm: 525),
            options: options)
        let priors = PatternPrior.regular(periodUm: 0.2, firstAngleDeg: 8, angles: 3, phases: 3)
        let parameters = SIMParameters.fromPriors(priors)
        var frames: [[Float]] = []
        for index in 0..<9 {
            var frame = [Float](repeating: 0, count: 64 * 64)
            for pixel in 0..<frame.count {
                let count: Int = 100 + (pixel * 7 + index * 13) % 50
                frame[pixel] = Float(count)
            }
            frames.append(frame)
        }
        let job = SIMJob(reconstructor: reconstructor, parameters: parameters)
        let processor = SIMWorkProcessor()
        for sequence in 0..<4 {
            let result = try processor.process(try job.item(sequence: sequence, frames: frames, pixel: .uint16))
            let output = try SIMJob.Output(result, width: 64, height: 64)
            let expected = try reconstructor.reconstruct(frames, parameters: parameters)
            let expectedBytes = expected.withUnsafeBytes { Data($0) }
            #expect(output.sr == expectedBytes)
        }
        #expect(processor.reconstructorCount == 1)
        var short = try job.item(sequence: 9, frames: frames, pixel: .uint16)
        short.parts[1] = short.parts[1].prefix(100)
        #expect(throws: MoireError.self) { try processor.process(short) }
        #expect(throws: (any Error).self) {
            try processor.process(WorkItem(sequence: 1, parts: [Data("{}".utf8), Data()]))
        }
        #expect(throws: MoireError.self) { try processor.process(WorkItem(sequence: 1, parts: [])) }
    }
}

/// A counter shared with a worker's processing thread.
// Sendable by hand: `count` guarded by `lock`.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() {
        lock.lock()
        count += 1
        lock.unlock()
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}
