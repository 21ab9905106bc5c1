import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoirePipeline
import MoireReconstruction
import MoireSimulation
import MoireStorage
import MoireTesting
import Testing

@Suite(.serialized) struct SIM3DOfflineTests {
    /// `moire reconstruct --sim3d` on a plain stack (z × angle × phase, phase fastest): with only the
    /// pattern's period as a prior, the orientations are found, the parameters estimated, and the SR
    /// volume is the one the simulator's true parameters give; widefield and SR written and read back.
    @Test func aPlainStackIsReconstructedFromThePeriodAlone() throws {
        let dir = Fixtures.tempDir("sim3doff")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var sim = SIM3DSimulator()
        sim.n = 128; sim.nz = 32; sim.peakPhotons = 1000
        let stacks = try sim.acquire(noiseSeed: 7)
        let plane = 128 * 128
        var frames: [[Float]] = []
        for z in 0..<32 { for a in 0..<3 { for p in 0..<5 { frames.append(Array(stacks[a][p][(z * plane)..<((z + 1) * plane)])) } } }
        try FloatStack.write(frames, width: 128, height: 128, pixelUm: sim.pixelUm, to: "\(dir)/stack.ome.tif", name: "3D-SIM", stream: "raw", mode: "stack")
        var job = OfflineSIM3D()
        job.zPlanes = 32; job.zStepUm = sim.dzUm; job.periodUm = 1 / sim.k1
        job.na = sim.optics.na; job.immersionIndex = sim.optics.immersionIndex; job.emissionNm = sim.optics.wavelengthUm * 1000
        job.background = sim.offsetADU
        let r = try job.run(input: "\(dir)/stack.ome.tif")
        #expect(r.sr.count == 1 && r.sr[0].width == 256 && r.sr[0].depth == 32 && abs(r.sr[0].voxelUm.x - sim.pixelUm / 2) < 1e-12)
        #expect(r.estimate.projected.angles.allSatisfy { !$0.flagged })
        // kz from the three-beam geometry at 488 nm in the simulator's immersion: the simulator's.
        #expect(abs(r.estimate.angles[0].kz - sim.kz) < 0.01)
        let rec = try SIM3DReconstructor(n: 128, nz: 32, pixelUm: sim.pixelUm, dzUm: sim.dzUm, optics: sim.optics)
        rec.background = sim.offsetADU
        let truth = (0..<3).map { i -> SIM3DAngle in
            let (kx, ky) = sim.k(i)
            return SIM3DAngle(kx: kx, ky: ky, kz: sim.kz, phases: (0..<5).map { sim.phase($0) }, m1: sim.m1, m2: sim.m2)
        }
        let reference = try rec.reconstruct(stacks, parameters: truth)
        var num = 0.0, den = 0.0
        for (a, b) in zip(r.sr[0].data, reference) { num += Double(a - b) * Double(a - b); den += Double(b) * Double(b) }
        #expect((num / den).squareRoot() < 0.05, "relative difference to the true parameters' volume \((num / den).squareRoot())")
        try OfflineSIM3D.write(r, to: "\(dir)/sr.ome.tif", name: "SR")
        let back = try OMETiffReader(path: "\(dir)/sr.ome.tif")
        let l = try #require(back.layout)
        #expect(l.width == 256 && l.zPlanes == 32 && abs(l.zStepUm - sim.dzUm) < 1e-9)
        #expect(try back.readPlaneFloat(16) == Array(r.sr[0].data[(16 * 256 * 256)..<(17 * 256 * 256)]))
        #expect(OfflineSIM3D.preview(r).starts(with: [0x89, 0x50, 0x4E, 0x47]))
    }

    /// A sim3d acquisition on the simulated rig with a 3D specimen: the camera renders the focal plane
    /// of the specimen at the stage's z under the SLM's three-beam patterns; `moire reconstruct
    /// --sim3d` of the recording (priors and optics from its own protocol and rig) finds the patterns
    /// the simulated SLM really projected (|k| 0.2 % larger and 0.15° rotated from the nominal ones).
    @Test func aSimulatedSIM3DRunIsReconstructedFromItsRecording() throws {
        let dir = Fixtures.tempDir("sim3drun")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: Fixtures.path("sim-hardware/protocols/sim3d-cell.yaml"))
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/sim3d.ome.tif"; o.noPublish = true
        let r = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock()).run()
        #expect(r.run.delivered == 240 && r.run.missing == 0)
        // A 3D specimen: the stack's first and last planes (2 µm apart) are different images.
        let reader = try OMETiffReader(path: "\(dir)/sim3d.ome.tif")
        let first = try reader.readPlaneFloat(0), last = try reader.readPlaneFloat(15 * 15)
        let mf = first.reduce(0, +) / Float(first.count), ml = last.reduce(0, +) / Float(last.count)
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for (a, b) in zip(first, last) { sab += Double(a - mf) * Double(b - ml); saa += Double(a - mf) * Double(a - mf); sbb += Double(b - ml) * Double(b - ml) }
        #expect(sab / (saa * sbb).squareRoot() < 0.8)
        // No prior given: the recording's protocol names the SLM's pattern set, the rig the optics.
        let rec = try OfflineSIM3D().run(input: "\(dir)/sim3d.ome.tif")
        #expect(rec.sr.count == 1 && rec.sr[0].width == 256 && rec.sr[0].depth == 16)
        for (a, e) in rec.estimate.projected.angles.enumerated() {
            #expect(!e.flagged)
            var d = abs(e.angleDeg - (10.15 + 60 * Double(a)))
            d = min(d, 180 - d)
            #expect(abs(e.kMagnitude - 2.4 * 1.002) < 0.002 * 2.4 && d < 0.1, "angle \(a): |k| \(e.kMagnitude), orientation \(e.angleDeg)°")
        }
    }

    /// Stacks it cannot reconstruct are refused with the file named: not square, not whole volumes, no prior.
    @Test func badStacksAreRefusedWithTheirPlace() throws {
        let dir = Fixtures.tempDir("sim3dbad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let frames = [[Float]](repeating: [Float](repeating: 100, count: 32 * 16), count: 60)
        try FloatStack.write(frames, width: 32, height: 16, pixelUm: 0.08, to: "\(dir)/rect.ome.tif", name: "x", stream: "raw", mode: "stack")
        let square = [[Float]](repeating: [Float](repeating: 100, count: 32 * 32), count: 61)
        try FloatStack.write(square, width: 32, height: 32, pixelUm: 0.08, to: "\(dir)/odd.ome.tif", name: "x", stream: "raw", mode: "stack")
        var job = OfflineSIM3D()
        job.zPlanes = 4; job.zStepUm = 0.125; job.periodUm = 0.42
        for (file, text) in [("rect", "square"), ("odd", "whole volumes")] {
            do { _ = try job.run(input: "\(dir)/\(file).ome.tif"); Issue.record("\(file) accepted") } catch let e as MoireError {
                #expect("\(e)".contains(text) && "\(e)".contains("\(file).ome.tif"), "\(e)")
            }
        }
        job.periodUm = nil
        #expect(throws: MoireError.self) { _ = try job.run(input: "\(dir)/odd.ome.tif") }
    }
}

@Suite(.serialized) struct LiveSIM3DTests {
    /// Mode sim3d live: the stack of every time point is reconstructed with parameters estimated on the
    /// first (seeded by the SLM's pattern set) and published as one `sr3d.<channel>` volume on the 2×
    /// grid with its parameters, and recorded; a stack with a lost frame is skipped and counted.
    @Test func sim3dStacksAreReconstructedLive() throws {
        let dir = Fixtures.tempDir("sim3dlive")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: Fixtures.path("sim-hardware/protocols/sim3d-cell.yaml"))
        let (r, headers, payloads) = try runCollecting(p, recordingPath: "\(dir)/s3.ome.tif", topics: ["sr3d.", "mip."])
        let c = try #require(r.sim3d)
        #expect(c.volumes == 1 && c.stacksComplete == 1 && c.skippedMissing == 0 && c.estimations == 1)
        let v = try #require(headers.firstIndex { $0.stream == "sr3d" })
        let h = headers[v]
        #expect(h.width == 256 && h.height == 256 && h.depth == 16 && h.inputs?.count == 240 && payloads[v].count == 256 * 256 * 16)
        #expect(h.params?["flagged"] == "0,0,0")
        let ks = (h.params?["k"] ?? "").split(separator: ",").compactMap { Double($0) }
        #expect(ks.count == 3 && ks.allSatisfy { abs($0 - 2.4 * 1.002) < 0.002 * 2.4 }, "\(ks)")
        #expect(headers.contains { $0.stream == "mip" && $0.width == 256 })
        let path = try #require(r.sim3dRecording)
        let rd = try OMETiffReader(path: path)
        #expect(rd.layout?.zPlanes == 16 && rd.layout?.width == 256)
        #expect(try rd.readPlaneFloat(8) == Array(payloads[v][(8 * 256 * 256)..<(9 * 256 * 256)]))
        // `estimate: every:2` over three time points (a smaller stack): estimated on the first and again on the third.
        let text = try String(contentsOfFile: Fixtures.path("sim-hardware/protocols/sim3d-cell.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../rigs/sim3d.yaml", with: Fixtures.path("sim-hardware/rigs/sim3d.yaml"))
            .replacingOccurrences(of: "roi: [128, 128]", with: "roi: [64, 64]")
            .replacingOccurrences(of: "planes: 16", with: "planes: 8")
            .replacingOccurrences(of: "count: 1", with: "count: 3")
            .replacingOccurrences(of: "record: true", with: "record: false\n  estimate: every:2")
        let small = try AcquisitionProtocol.load(file: Fixtures.write(text, to: "small.yaml", in: dir))
        var o3 = PipelineOptions()
        o3.noRecording = true; o3.noPublish = true
        let r3 = try AcquisitionPipeline(protocol: small, options: o3, clock: VirtualClock()).run()
        let c3 = try #require(r3.sim3d)
        // In virtual time a stack waits for the worker: every one is made into a volume.
        #expect(c3.volumes == 3 && c3.skippedBehind == 0 && c3.estimations == 2, "\(c3)")
        // `estimate: on-drop`: a pattern that moves (1.65° and 2.7 % off, as a drifting SLM might) after
        // the first stack drops order 1's modulation under the old parameters: estimated again. A pattern
        // that stays: estimated once.
        // (The full 128² × 16 stack: the estimate is trusted there, two time points.)
        let full = try String(contentsOfFile: Fixtures.path("sim-hardware/protocols/sim3d-cell.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../rigs/sim3d.yaml", with: Fixtures.path("sim-hardware/rigs/sim3d.yaml"))
            .replacingOccurrences(of: "count: 1", with: "count: 2")
            .replacingOccurrences(of: "record: true", with: "record: false\n  estimate: on-drop")
            .replacingOccurrences(of: "frame_ms: 1000", with: "frame_ms: 30000")  // the simulator blurs the moved patterns on their first frame
        let onDrop = try AcquisitionProtocol.load(file: Fixtures.write(full, to: "ondrop.yaml", in: dir))
        for moves in [false, true] {
            let pipe = try AcquisitionPipeline(protocol: onDrop, options: o3, clock: VirtualClock())
            let slm = try #require(pipe.devices.modulator as? SimulatedModulator)
            let r4 = try pipe.run { progress in
                if moves, progress.done == 16 * 15 { slm.patternError = PatternError(kScale: 1.027, rotationDeg: 1.65, phaseOffsetRad: 0.4) }
            }
            let c4 = try #require(r4.sim3d)
            #expect(c4.estimations == (moves ? 2 : 1), "pattern moved: \(moves); \(c4)")
            #expect(c4.volumes == 2 && r4.run.missing == 0)
        }
        // A stack live 3D-SIM cannot reconstruct (odd planes): refused before any device opens or file is written.
        let odd = try AcquisitionProtocol.load(file: Fixtures.write(text.replacingOccurrences(of: "planes: 8", with: "planes: 7"), to: "odd.yaml", in: dir))
        var o4 = PipelineOptions()
        o4.recordingPath = "\(dir)/odd.ome.tif"; o4.noPublish = true
        do { _ = try AcquisitionPipeline(protocol: odd, options: o4, clock: VirtualClock()); Issue.record("odd planes accepted") } catch let e as MoireError {
            #expect("\(e)".contains("even number of z planes") && "\(e)".contains("odd.yaml"), "\(e)")
        }
        #expect(throws: MoireError.self) { try AcquisitionPipeline.preflight(odd) }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/odd.ome.tif"))
        // A lost frame: the stack cannot be separated; skipped and counted, no volume.
        var o2 = PipelineOptions()
        o2.noRecording = true; o2.noPublish = true; o2.faults = [.dropFrame(37)]
        let r2 = try AcquisitionPipeline(protocol: p, options: o2, clock: VirtualClock()).run()
        #expect(r2.run.missing == 1 && r2.sim3d?.skippedMissing == 1 && r2.sim3d?.volumes == 0)
    }
}
