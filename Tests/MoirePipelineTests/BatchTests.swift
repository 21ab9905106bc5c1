import Foundation
import MoireConfig
import MoireCore
import MoirePipeline
import MoireStorage
import MoireTesting
import Testing

@Suite(.serialized) struct BatchTests {
    let dir = Fixtures.tempDir("batch")

    /// Records a run of `p` in virtual time to `name` in the test's folder (no live reconstruction
    /// unless `reconstructing`), and returns the recording's path.
    func record(_ p: AcquisitionProtocol, to name: String, reconstructing: Bool = false) throws -> String {
        var options = PipelineOptions()
        options.recordingPath = "\(dir)/\(name)"
        options.noPublish = true
        options.noReconstruction = !reconstructing
        _ = try AcquisitionPipeline(protocol: p, options: options, clock: VirtualClock()).run()
        return options.recordingPath!
    }

    /// Runs each of `count` parts of `merged` as a batch task does (`process` gives the part's
    /// item count and its writer; written under a temporary name, then moved into place), and
    /// returns the item counts in part order.
    func writeParts(
        _ count: Int, of merged: String, _ process: (BatchPart) throws -> (items: Int, write: (String) throws -> Void)
    ) throws -> [Int] {
        try (1...count).map { index in
            let part = try BatchPart(index: index, count: count)
            let made = try process(part)
            try BatchPart.writeAtomically(to: part.path(for: merged), made.write)
            return made.items
        }
    }

    /// The item counts `count` parts of `total` items should make.
    func partSizes(_ count: Int, of total: Int) throws -> [Int] {
        try (1...count).map { try BatchPart(index: $0, count: count).range(of: total).count }
    }

    /// Expects the stacks at `whole` and `merged` to hold the same planes, pixel for pixel.
    func expectSamePlanes(_ whole: String, _ merged: String) throws {
        let a = try OMETiffReader(path: whole)
        let b = try OMETiffReader(path: merged)
        #expect(a.planeCount == b.planeCount && a.width == b.width && a.height == b.height)
        for plane in 0..<a.planeCount {
            #expect(try a.readPlaneFloat(plane) == b.readPlaneFloat(plane), "plane \(plane)")
        }
    }

    /// Parts cover every item exactly once, in order, with sizes that differ by at most one.
    @Test func partsCoverEveryItemOnceInOrder() throws {
        for total in 1...40 {
            for count in 1...total {
                let ranges = try (1...count).map { try BatchPart(index: $0, count: count).range(of: total) }
                #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == total)
                #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
                let sizes = ranges.map(\.count)
                #expect(sizes.max()! - sizes.min()! <= 1 && sizes.min()! >= 1, "\(total)/\(count): \(sizes)")
            }
        }
        #expect(try BatchPart(parsing: "3/8") == BatchPart(index: 3, count: 8))
        for bad in ["0/4", "5/4", "3", "a/b", "1/0", "-1/3"] {
            #expect(throws: MoireError.self, "\(bad)") { try BatchPart(parsing: bad) }
        }
        #expect(try BatchPart(index: 2, count: 3).path(for: "/d/out.ome.tif") == "/d/out.part-2-of-3.ome.tif")
    }

    /// A recording reconstructed in three parts and merged equals the whole run reconstructed at
    /// once, pixel for pixel and header for header (inputs, parameters): each part estimates where
    /// the whole run does, and the adaptive filter of a set depends on that set alone. The merge
    /// refuses while a part is missing, and names it.
    @Test func partsMergedEqualTheWholeRun() throws {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: 128, timepoints: 7, exposureMs: 5))
        let input = try record(p, to: "raw.ome.tif")
        let whole = try OfflineSIM().run(input: input)
        try OfflineSIM.write(whole, to: "\(dir)/whole.ome.tif", name: "SR of raw.ome.tif")

        let merged = "\(dir)/merged.ome.tif"
        for index in 1...3 {
            var job = OfflineSIM()
            job.part = try BatchPart(index: index, count: 3)
            let r = try job.run(input: input)
            #expect(r.sets == Array(job.part!.range(of: 7)))
            try BatchPart.writeAtomically(to: job.part!.path(for: merged)) {
                try OfflineSIM.write(r, to: $0, name: "SR of raw.ome.tif")
            }
            #expect(BatchPart.isComplete(job.part!.path(for: merged)))
        }
        let second = try BatchPart(index: 2, count: 3).path(for: merged)
        try FileManager.default.moveItem(atPath: second, toPath: second + ".away")
        do {
            _ = try BatchMerge.merge(output: merged, parts: 3)
            Issue.record("merged without part 2")
        } catch let error as MoireError {
            #expect(error.message.contains("parts 2 of 3"), "\(error)")
        }
        try FileManager.default.moveItem(atPath: second + ".away", toPath: second)
        let summary = try BatchMerge.merge(output: merged, parts: 3)
        #expect(summary.timepoints == 7 && summary.planes == 7)

        let a = try OMETiffReader(path: "\(dir)/whole.ome.tif")
        let b = try OMETiffReader(path: merged)
        #expect(a.planeCount == b.planeCount && a.width == b.width && a.pixel == b.pixel)
        let headersA = try #require(a.planeRecords()).map(\.header)
        let headersB = try #require(b.planeRecords()).map(\.header)
        for plane in 0..<a.planeCount {
            #expect(try a.readPlaneFloat(plane) == b.readPlaneFloat(plane), "plane \(plane)")
            #expect(headersA[plane].t == headersB[plane].t && headersA[plane].seq == headersB[plane].seq)
            #expect(headersA[plane].inputs == headersB[plane].inputs && headersA[plane].params == headersB[plane].params)
        }
        #expect(a.layout?.name == b.layout?.name && a.layout?.timepoints == b.layout?.timepoints)
        // The same parts merged into OME-Zarr: zarr-python reads the planes of the whole run.
        let mergedZarr = "\(dir)/merged.ome.zarr"
        let zarrSummary = try BatchMerge.merge(output: mergedZarr, parts: 3)
        #expect(zarrSummary.timepoints == 7 && zarrSummary.planes == 7)
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = [
            "python3", Fixtures.path("Tests/Data/omezarr/equals_tiff.py"), mergedZarr, "\(dir)/whole.ome.tif",
        ]
        try check.run()
        check.waitUntilExit()
        #expect(check.terminationStatus == 0, "the merged OME-Zarr differs from the whole run (stderr above)")
    }

    /// A 3D-SIM recording of three volumes reconstructed in two parts and merged equals the whole
    /// run: every part takes its parameters from the recording's first volume.
    @Test func sim3dPartsMergedEqualTheWholeRun() throws {
        let text = try String(contentsOfFile: Fixtures.path("sim-hardware/protocols/sim3d-cell.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../rigs/sim3d.yaml", with: Fixtures.path("sim-hardware/rigs/sim3d.yaml"))
            .replacingOccurrences(of: "roi: [128, 128]", with: "roi: [64, 64]")
            .replacingOccurrences(of: "planes: 16", with: "planes: 8")
            .replacingOccurrences(of: "count: 1", with: "count: 3")
        let p = try AcquisitionProtocol.load(file: Fixtures.write(text, to: "sim3d-parts.yaml", in: dir))
        let input = try record(p, to: "raw3d.ome.tif")
        let whole = try OfflineSIM3D().run(input: input)
        #expect(whole.sr.count == 3)
        try OfflineSIM3D.write(whole, to: "\(dir)/whole3d.ome.tif", name: "3D-SIM of raw3d.ome.tif")
        let merged = "\(dir)/merged3d.ome.tif"
        let made = try writeParts(2, of: merged) { part in
            var job = OfflineSIM3D()
            job.part = part
            let r = try job.run(input: input)
            return (r.sr.count, { try OfflineSIM3D.write(r, to: $0, name: "3D-SIM of raw3d.ome.tif") })
        }
        #expect(made == (try partSizes(2, of: 3)))
        let summary = try BatchMerge.merge(output: merged, parts: 2)
        #expect(summary.timepoints == 3 && summary.planes == 3 * 8)
        try expectSamePlanes("\(dir)/whole3d.ome.tif", merged)
    }

    /// An LLS-SIM recording of three volumes reconstructed in two parts (whole volumes: each
    /// plane's phase set through the 2D-SIM job, parameters from the recording's first set) and
    /// merged equals the whole run; more parts than volumes are refused.
    @Test func llsSIMPartsMergedEqualTheWholeRun() throws {
        let p = try AcquisitionProtocol.load(
            file: latticeProtocol(in: dir, planes: 8, timepoints: 3, extra: "", sim: true))
        let input = try record(p, to: "rawllssim.ome.tif")
        var job = try OfflineLightSheet()
        let whole = try job.runSIM(input: input, sim: OfflineSIM())
        #expect(whole.deskewed.count == 3)
        try OfflineLightSheet.write(whole, to: "\(dir)/wholellssim.ome.tif", name: "volumes")
        let merged = "\(dir)/mergedllssim.ome.tif"
        let made = try writeParts(2, of: merged) { part in
            job.part = part
            let r = try job.runSIM(input: input, sim: OfflineSIM())
            return (r.deskewed.count, { try OfflineLightSheet.write(r, to: $0, name: "volumes") })
        }
        #expect(made == (try partSizes(2, of: 3)))
        let summary = try BatchMerge.merge(output: merged, parts: 2)
        #expect(summary.timepoints == 3)
        try expectSamePlanes("\(dir)/wholellssim.ome.tif", merged)
        job.part = try BatchPart(index: 1, count: 4)
        #expect(throws: MoireError.self) { try job.runSIM(input: input, sim: OfflineSIM()) }
    }

    /// A time-lapse denoised in three parts and merged holds every frame once, in order: the first
    /// part is the whole run's start (the same computation); a later part, after its warm-up on the
    /// frames before its slice, comes much closer to the whole run's frames than the raw frames
    /// are. A part cannot save weights, and more parts than frames are refused.
    @Test func denoisePartsMergedHoldEveryFrameOnceNearTheWholeRun() throws {
        let p = try AcquisitionProtocol.load(
            file: Fixtures.smallProtocol(in: dir, mode: "widefield", roi: 64, timepoints: 12, exposureMs: 0.3))
        let input = try record(p, to: "rawden.ome.tif", reconstructing: true)
        var job = OfflineDenoise()
        job.firstSteps = 20
        job.adaptSteps = 2
        job.crop = 32
        job.partWarmUpFrames = 4
        let whole = try job.run(input: input)
        #expect(whole.frames.count == 12)
        let merged = "\(dir)/mergedden.ome.tif"
        var partFrames: [[Float]] = []
        let made = try writeParts(3, of: merged) { part in
            job.part = part
            let r = try job.run(input: input)
            #expect(r.weightsVersions.count == r.frames.count)
            partFrames += r.frames
            return (r.frames.count, { try OfflineDenoise.write(r, to: $0, name: "denoised") })
        }
        #expect(made == [4, 4, 4])
        let summary = try BatchMerge.merge(output: merged, parts: 3)
        #expect(summary.timepoints == 12)
        let reader = try OMETiffReader(path: merged)
        #expect(reader.planeCount == 12)
        #expect(reader.planeRecords()?.map(\.header.t) == Array(0..<12))
        for t in 0..<12 {
            #expect(try reader.readPlaneFloat(t) == partFrames[t], "plane \(t)")
        }
        // Part 1 starts where the whole run starts; parts 2 and 3 start fresh after their warm-up.
        let raw = try OMETiffReader(path: input)
        func rms(_ a: [Float], _ b: [Float]) -> Double {
            (zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(a.count)).squareRoot()
        }
        for t in 0..<4 {
            #expect(rms(partFrames[t], whole.frames[t]) < 1e-3 * rms(try raw.readPlaneFloat(t), whole.frames[t]), "frame \(t)")
        }
        for t in 4..<12 {
            let fromWhole = rms(partFrames[t], whole.frames[t])
            let rawFromWhole = rms(try raw.readPlaneFloat(t), whole.frames[t])
            #expect(fromWhole < 0.5 * rawFromWhole, "frame \(t): part \(fromWhole), raw \(rawFromWhole)")
        }
        job.saveWeights = "\(dir)/w.bin"
        #expect(throws: MoireError.self) { try job.run(input: input) }
        job.saveWeights = nil
        job.part = try BatchPart(index: 1, count: 13)
        #expect(throws: MoireError.self) { try job.run(input: input) }
    }

    /// A light-sheet recording of three volumes deskewed and deconvolved in two parts and merged
    /// equals the whole run: each volume is processed on its own.
    @Test func lightSheetPartsMergedEqualTheWholeRun() throws {
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, planes: 16, timepoints: 3))
        let input = try record(p, to: "rawls.ome.tif")
        var job = try OfflineLightSheet()
        job.iterations = 2
        let whole = try job.run(input: input)
        #expect(whole.deconvolved.count == 3)
        try OfflineLightSheet.write(whole, to: "\(dir)/wholels.ome.tif", name: "volumes")
        let merged = "\(dir)/mergedls.ome.tif"
        let made = try writeParts(2, of: merged) { part in
            job.part = part
            let r = try job.run(input: input)
            return (r.deconvolved.count, { try OfflineLightSheet.write(r, to: $0, name: "volumes") })
        }
        #expect(made == (try partSizes(2, of: 3)))
        let summary = try BatchMerge.merge(output: merged, parts: 2)
        #expect(summary.timepoints == 3)
        try expectSamePlanes("\(dir)/wholels.ome.tif", merged)
    }
}
