import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireDenoise
import MoireHardware
import MoirePipeline
import MoireReconstruction
import MoireSimulation
import MoireStorage
import MoireTesting
import MoireTransport
import Testing

/// A light-sheet rig from the simulated profiles (`lightSheet` is its `light_sheet:` block) and a protocol on it.
func latticeProtocol(in dir: String, lightSheet: String = "{angle_deg: 31.5, thickness_um: 1.0, scan: stage}", planes: Int = 30,
                     step: Double = 0.4, timepoints: Int = 2, extra: String = "light_sheet: {iterations: 3}", sim: Bool = false) -> String {
    let prof = Fixtures.path("sim-hardware/profiles")
    let spec = Fixtures.write("moire: 1\nkind: beads\nseed: 4\npuncta: 40\nsize_um: [16, 6, 6]\nbrightness: 20\nbackground: 0.02\n",
                              to: "beads.yaml", in: dir)
    let rig = Fixtures.write("""
        moire: 1
        name: lattice test rig
        devices:
          camera: {name: cam, profile: \(prof)/camera-sim-scmos.yaml}
        \(sim ? "  modulator: {name: slm, profile: \(prof)/slm-lattice-sim.yaml}" : "")
          scanner: {name: galvo, profile: \(prof)/galvo-sim.yaml}
          stage: {name: scan, profile: \(prof)/scanstage-sim.yaml}
          lasers:
            - {name: l488, profile: \(prof)/laser-sim-488.yaml}
        optics: {objective_na: 1.1, magnification: 62.5, immersion_index: 1.33}
        light_sheet: \(lightSheet)
        wiring: {leader: software}
        simulation: {specimen: \(spec)}
        """, to: "rig.yaml", in: dir)
    return Fixtures.write("""
        moire: 1
        name: lattice test
        rig: \(rig)
        mode: \(sim ? "llssim" : "llsm")
        camera: {roi: [64, 32]}
        channels:
          - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 2, emission_nm: 520\(sim ? ", pattern_set: lattice488" : "")}
        \(sim ? "sim: {angles: 1, phases: 3}" : "")
        z: {planes: \(planes), step_um: \(step), start_um: 0}
        timelapse: {count: \(timepoints)}
        \(extra)
        deadlines: {first_frame_ms: 5000, frame_ms: 2000}
        """, to: "lattice.yaml", in: dir)
}

/// Runs `p` (recording to `recordingPath`, or not), publishing on a free port, and collects the float32
/// frames of `topics` (`collectDerived`).
func runCollecting(_ p: AcquisitionProtocol, recordingPath: String?, faults: [CameraFault] = [], clock: MoireClock = VirtualClock(),
                   topics: [String]) throws -> (PipelineResult, [FrameHeader], [[Float]]) {
    var o = PipelineOptions()
    if let recordingPath { o.recordingPath = recordingPath } else { o.noRecording = true }
    o.publishEndpoint = loopbackAnyPort
    o.waitForSubscribers = 1
    o.faults = faults
    return try collectDerived(try AcquisitionPipeline(protocol: p, options: o, clock: clock), topics: topics)
}

/// Runs the pipeline while a subscriber collects the float32 frames of `topics` up to the run's `stop`.
func collectDerived(_ pipe: AcquisitionPipeline, topics: [String]) throws -> (PipelineResult, [FrameHeader], [[Float]]) {
    let (r, items) = try runListening(pipe, topics: topics, timeoutMs: 120_000)
    var headers: [FrameHeader] = []
    var payloads: [[Float]] = []
    for case .frame(let h, let p) in items {
        headers.append(h)
        payloads.append(p.withUnsafeBytes { bytes in bytes.withMemoryRebound(to: Float.self) { Array($0) } })
    }
    return (r, headers, payloads)
}

@Suite(.serialized) struct LightSheetPipelineTests {
    @Test func liveVolumesArePublishedAndRecordedWithTheDeskewGeometry() throws {
        let dir = Fixtures.tempDir("llsmlive")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir))
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: p.pixelSizeUm)
        let (r, headers, payloads) = try runCollecting(p, recordingPath: "\(dir)/raw.ome.tif", topics: ["vol.", "mip."])
        let c = try #require(r.volumes)
        #expect(c.volumes == 2 && c.missingPlanes == 0 && r.run.missing == 0)
        let vols = headers.enumerated().filter { $0.element.stream == "vol" }
        #expect(vols.count == 2)
        for (i, h) in vols {
            #expect(h.width == g.deskewedWidth(nx: 64, nz: 30) && h.height == 32 && h.depth == 30)
            #expect(abs((Double(h.params?["voxelZUm"] ?? "") ?? 0) - g.planeSpacingUm) < 1e-6)
            #expect(payloads[i].count == h.width * h.height * 30 && payloads[i].allSatisfy(\.isFinite))
            #expect(h.inputs?.count == 30)
        }
        #expect(headers.filter { $0.stream == "mip" }.count == 2)
        // The recorded volumes: ZYX per time point, voxel size after deskew, the same numbers as published.
        let path = try #require(r.volumeRecording)
        let rd = try OMETiffReader(path: path)
        let l = try #require(rd.layout)
        #expect(l.zPlanes == 30 && l.timepoints == 2 && l.width == g.deskewedWidth(nx: 64, nz: 30) && abs(l.zStepUm - g.planeSpacingUm) < 1e-6)
        let plane = l.width * l.height
        #expect(try rd.readPlaneFloat(7) == Array(payloads[vols[0].offset][(7 * plane)..<(8 * plane)]))
    }

    /// `rotate: true`: the live volumes are turned into the coverslip frame (isotropic voxels of the
    /// pixel size) before they are published and recorded.
    @Test func liveVolumesCanBeRotatedIntoTheCoverslipFrame() throws {
        let dir = Fixtures.tempDir("llsmrot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, planes: 20, timepoints: 1, extra: "light_sheet: {iterations: 2, rotate: true}"))
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: p.pixelSizeUm)
        let grid = CoverslipRotation.grid(width: g.deskewedWidth(nx: 64, nz: 20), depth: 20,
                                          voxelUm: (g.pixelUm, g.pixelUm, g.planeSpacingUm), angleDeg: 31.5)
        let (r, headers, payloads) = try runCollecting(p, recordingPath: "\(dir)/raw.ome.tif", topics: ["vol.", "mip."])
        #expect(r.volumes?.volumes == 1)
        let v = try #require(headers.firstIndex { $0.stream == "vol" })
        let h = headers[v]
        #expect(h.width == grid.width && h.height == 32 && h.depth == grid.depth && grid.depth != 20)
        #expect(h.params?["frame"] == "coverslip" && abs((Double(h.params?["voxelZUm"] ?? "") ?? 0) - g.pixelUm) < 1e-9)
        #expect(payloads[v].count == grid.width * 32 * grid.depth)
        let path = try #require(r.volumeRecording)
        let l = try #require(try OMETiffReader(path: path).layout)
        #expect(l.width == grid.width && l.zPlanes == grid.depth && abs(l.zStepUm - g.pixelUm) < 1e-9)
    }

    /// `source: denoised`: every plane of a stack is denoised with one weights version of the live
    /// denoiser before the deskew; the volume names the version, and that version's checkpoint with
    /// the recorded raw planes reproduces the volume exactly.
    @Test func denoisedVolumesNameTheirWeightsAndAreReproducible() throws {
        let dir = Fixtures.tempDir("llsmden")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, planes: 8, timepoints: 6, extra: """
            light_sheet: {iterations: 0, source: denoised}
            denoise: {steps_per_frame: 1, crop: 16, batch: 1, checkpoint_every: 1}
            """))
        let (r, headers, payloads) = try runCollecting(p, recordingPath: "\(dir)/raw.ome.tif", topics: ["vol.", "mip."])
        // In virtual time a stack waits for the worker (and the camera for the stack): none is skipped.
        let c = try #require(r.volumes)
        #expect(c.volumes == 6 && c.skippedBehind == 0 && r.run.missing == 0, "\(c)")
        let vols = headers.enumerated().filter { $0.element.stream == "vol" }
        #expect(vols.count == c.volumes)
        let ckpt = try #require(r.denoiseCheckpoints)
        let reader = try OMETiffReader(path: "\(dir)/raw.ome.tif")
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: p.pixelSizeUm)
        let cam = p.rig.cameraProfile
        for (i, h) in vols {
            #expect(h.params?["source"] == "denoised")
            let v = try #require(h.params?["weightsVersion"].flatMap(Int.init))
            // Temporal context (the default): the stack's planes in order, from an empty context.
            let d = Denoiser(engine: try DNNLEngine(), model: NoiseModel(camera: cam), input: .frameAndHistory)
            try WeightsFile.load("\(ckpt)/v\(v).bin", into: d.net)
            let inputs = try #require(h.inputs)
            #expect(inputs.count == 8)
            let scale = h.params?["denoiseScale"].flatMap(Float.init)
            let planes = try inputs.map { try d.denoise(try reader.readPlaneFloat($0), width: 64, height: 32, scale: scale) }
            let again = try LightSheetProcessor(geometry: g, iterations: 0) { LightSheetPSF.model(try LightSheetOptics(), voxelUm: $0) }
                .process(planes: planes, width: 64, height: 32).volume
            let same = again.data == payloads[i]
            #expect(same, "volume \(i) (weights v\(v)) is not reproduced")
            // Not the raw planes' volume.
            let raw = try LightSheetProcessor(geometry: g, iterations: 0) { LightSheetPSF.model(try LightSheetOptics(), voxelUm: $0) }
                .process(planes: try inputs.map { try reader.readPlaneFloat($0) }, width: 64, height: 32).volume
            let differs = raw.data != payloads[i]
            #expect(differs)
        }
        // source: denoised without live denoising is refused with its place.
        do {
            _ = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, extra: "light_sheet: {source: denoised}"))
            Issue.record("source: denoised accepted without a denoise block")
        } catch let e as MoireError { #expect("\(e)".contains("lattice.yaml") && "\(e)".contains("source"), "\(e)") }
    }

    /// The rig's `light_sheet.psf`: the live stage deconvolves with the measured PSF (the volume is the
    /// one the same PSF gives offline, not the model's); a PSF it cannot use stops the run before it starts.
    @Test func liveVolumesAreDeconvolvedWithTheRigsMeasuredPSF() throws {
        let dir = Fixtures.tempDir("llsmpsf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        let voxel = (g.pixelUm, g.pixelUm, g.planeSpacingUm)
        // "Measured": the model of a sheet 2.5 µm thick (the rig says 1.0).
        let measured = LightSheetPSF.model(try LightSheetOptics(sheetThicknessUm: 2.5), voxelUm: voxel)
        try FloatStack.write(volumes: [measured], to: "\(dir)/psf.ome.tif", name: "psf", stream: "psf", mode: "psf")
        let sheet = "{angle_deg: 31.5, thickness_um: 1.0, scan: stage, psf: \(dir)/psf.ome.tif}"
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, lightSheet: sheet, planes: 16, timepoints: 1))
        #expect(p.rig.lightSheet?.psf(emissionNm: 520) == "\(dir)/psf.ome.tif")
        let (r, headers, payloads) = try runCollecting(p, recordingPath: "\(dir)/raw.ome.tif", topics: ["vol.", "mip."])
        #expect(r.volumes?.volumes == 1)
        let v = try #require(headers.firstIndex { $0.stream == "vol" })
        #expect(headers[v].params?["psf"] == "measured")
        let reader = try OMETiffReader(path: "\(dir)/raw.ome.tif")
        let planes = try (0..<16).map { try reader.readPlaneFloat($0) }
        func offline(_ psf: Volume) throws -> [Float] {
            try LightSheetProcessor(geometry: g, iterations: 3) { _ in psf }.process(planes: planes, width: 64, height: 32).volume.data
        }
        let withMeasured = try offline(measured), withModel = try offline(LightSheetPSF.model(try LightSheetOptics(), voxelUm: voxel))
        let same = withMeasured == payloads[v], differs = withModel != payloads[v]
        #expect(same && differs)
        // A PSF with even sides, and a per-wavelength table without this channel's emission: refused before the run.
        let even = Volume(width: 4, height: 5, depth: 5, data: [Float](repeating: 1, count: 100), voxelUm: voxel)
        try FloatStack.write(volumes: [even], to: "\(dir)/even.ome.tif", name: "psf", stream: "psf", mode: "psf")
        for (psf, text) in [("\(dir)/even.ome.tif", "odd sides"), ("{600: \(dir)/psf.ome.tif}", "no PSF for channel gfp")] {
            let bad = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, lightSheet: "{angle_deg: 31.5, thickness_um: 1.0, scan: stage, psf: \(psf)}",
                                                                          planes: 16, timepoints: 1))
            do {
                _ = try AcquisitionPipeline(protocol: bad, options: PipelineOptions(), clock: VirtualClock())
                Issue.record("accepted psf \(psf)")
            } catch let e as MoireError { #expect("\(e)".contains(text), "\(e)") }
        }
        // A file that is not there: the rig names it.
        #expect(throws: MoireError.self) {
            _ = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, lightSheet: "{angle_deg: 31.5, thickness_um: 1.0, scan: stage, psf: nowhere.tif}"))
        }
    }

    @Test func llsSIMStacksTheSRPlanesIntoDeskewedVolumes() throws {
        let dir = Fixtures.tempDir("llssimlive")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, planes: 12, timepoints: 1, extra: "", sim: true))
        #expect(p.mode == .llssim && p.phases == 3)
        let (r, headers, payloads) = try runCollecting(p, recordingPath: nil, topics: ["vol.", "mip."])
        #expect(r.sim?.reconstructed == 12)
        let half = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: p.pixelSizeUm / 2)
        let v = try #require(headers.firstIndex { $0.stream == "vol" })
        #expect(headers[v].width == half.deskewedWidth(nx: 128, nz: 12) && headers[v].height == 64 && headers[v].depth == 12)
        #expect(headers[v].params?["source"] == "sim-sr" && abs(headers[v].pixelSizeUm - p.pixelSizeUm / 2) < 1e-9)
        #expect(headers[v].inputs?.count == 12 && payloads[v].allSatisfy(\.isFinite))

        // Offline: the recording of the same run gives a volume of the same geometry.
        var o2 = PipelineOptions()
        o2.recordingPath = "\(dir)/raw.ome.tif"; o2.noPublish = true
        _ = try AcquisitionPipeline(protocol: p, options: o2, clock: VirtualClock()).run()
        let off = try OfflineLightSheet().runSIM(input: "\(dir)/raw.ome.tif", sim: OfflineSIM())
        #expect(off.deskewed.count == 1 && off.deskewed[0].width == headers[v].width && off.deskewed[0].depth == 12)
        #expect(abs(off.geometry.pixelUm - p.pixelSizeUm / 2) < 1e-12)
    }

    @Test func aMissingPlaneIsFilledFlaggedAndCountedNeverShifted() throws {
        let dir = Fixtures.tempDir("llsmmiss")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, timepoints: 1, extra: "light_sheet: {iterations: 0}"))
        let (r, headers, _) = try runCollecting(p, recordingPath: nil, faults: [.dropFrame(12)], topics: ["vol.", "mip."])
        #expect(r.run.missing == 1)
        let c = try #require(r.volumes)
        #expect(c.volumes == 1 && c.missingPlanes == 1)
        let v = try #require(headers.first { $0.stream == "vol" })
        #expect(v.params?["missingPlanes"] == "12" && v.depth == 30)
    }

    @Test func galvoScanSeesWhatTheStageScanSees() throws {
        func frames(_ lightSheet: String) throws -> [[UInt16]] {
            let dir = Fixtures.tempDir("llsmscan")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let p = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, lightSheet: lightSheet, planes: 6, timepoints: 1))
            let clock = VirtualClock()
            let devices = try DeviceFactory.make(rig: p.rig, clock: clock, seed: 3)
            var out: [[UInt16]] = []
            let res = Runner(protocol: p, devices: devices, runID: "scan", clock: clock).run(pool: FramePool(slots: 8, bytes: 64 * 32 * 2)) { f in
                out.append(f.withPayload { Array($0.bindMemory(to: UInt16.self)) }); f.release()
            }
            #expect(res.reason == "completed")
            return out
        }
        let stage = try frames("{angle_deg: 31.5, thickness_um: 1.0, scan: stage}")
        let galvo = try frames("{angle_deg: 31.5, thickness_um: 1.0, scan: galvo}")
        #expect(stage.count == 6 && stage == galvo)
        // Consecutive planes differ: the scan really moves the specimen through the sheet.
        #expect(stage[0] != stage[3])
    }

    @Test func badLightSheetGeometryIsRejectedWithItsPlace() throws {
        let dir = Fixtures.tempDir("llsmbad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (sheet, text) in [("{angle_deg: 0, thickness_um: 1.0}", "angle"), ("{angle_deg: 90, thickness_um: 1.0}", "angle"),
                              ("{angle_deg: 31.5, thickness_um: -1}", "thickness_um")] {
            do {
                _ = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, lightSheet: sheet))
                Issue.record("accepted \(sheet)")
            } catch let e as MoireError { #expect("\(e)".contains("rig.yaml") && "\(e)".contains(text), "\(e)") }
        }
        for step in [0.0, -0.4] {
            #expect(throws: MoireError.self) { _ = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, step: step)) }
        }
        // A light_sheet block's values are checked with their place in the protocol.
        for (extra, text) in [("light_sheet: {rotate: sideways}", "rotate"), ("light_sheet: {iterations: -2}", "iterations")] {
            do {
                _ = try AcquisitionProtocol.load(file: latticeProtocol(in: dir, extra: extra))
                Issue.record("accepted \(extra)")
            } catch let e as MoireError { #expect("\(e)".contains("lattice.yaml") && "\(e)".contains(text), "\(e)") }
        }
        // A rig without a light sheet cannot do llsm.
        let multisim = Fixtures.smallProtocol(in: dir, mode: "llsm")
        do { _ = try AcquisitionProtocol.load(file: multisim); Issue.record("llsm accepted on a rig without a light sheet") } catch let e as MoireError {
            #expect("\(e)".contains("cannot do mode 'llsm'"))
        }
    }
}
