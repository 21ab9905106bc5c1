import Foundation
import MoireConfig
import MoireCore
import MoireTesting
import Testing

@Suite struct ConfigTests {
    /// Every protocol shipped in sim-hardware/protocols loads (with its rig, profiles and specimen).
    @Test func everyShippedProtocolLoads() throws {
        let dir = Fixtures.path("sim-hardware/protocols")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(files.count >= 7)
        for f in files {
            do { _ = try AcquisitionProtocol.load(file: "\(dir)/\(f)") } catch { Issue.record("\(f): \(error)") }
        }
    }

    let dir = Fixtures.tempDir("config")

    func loadError(_ yaml: String) -> MoireError? {
        let p = Fixtures.write(yaml, to: "p.yaml", in: dir)
        do { _ = try AcquisitionProtocol.load(file: p); return nil } catch let e as MoireError { return e } catch { return nil }
    }

    var base: String {
        """
        moire: 1
        name: t
        rig: \(Fixtures.path("sim-hardware/rigs/multisim.yaml"))
        mode: sim2d
        camera: {roi: [128, 128]}
        channels:
          - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 5, pattern_set: sim488}
        sim: {angles: 3, phases: 3}
        """
    }

    /// The stage blocks come out typed, with what was written and the defaults for what was not;
    /// a value out of range or of the wrong kind is refused at its line.
    @Test func stageBlocksAreTypedSpecs() throws {
        let blocks = """

        reconstruction: {estimate: "every:5", wiener: 0.3, suppression: auto, backlog: 8, record: true}
        denoise: {pairs: odd-even, weights: scratch, crop: 32, learning_rate: 0.001}
        """
        let p = try AcquisitionProtocol.load(file: Fixtures.write(base + blocks, to: "typed.yaml", in: dir))
        var reconstruction = LiveReconstructionSpec()
        reconstruction.estimation = .every(5)
        reconstruction.wiener = .fixed(0.3)
        reconstruction.backlogSets = 8
        reconstruction.record = true
        #expect(p.reconstruction == reconstruction)
        #expect(p.denoise.enabled && p.denoise.pairs == .oddEven && p.denoise.weights == .scratch)
        #expect(p.denoise.crop == 32 && p.denoise.learningRate == 0.001 && p.denoise.context == nil)
        #expect(p.denoise.stepsPerFrame == LiveDenoiseSpec().stepsPerFrame)

        let plain = try AcquisitionProtocol.load(file: Fixtures.write(base, to: "plain.yaml", in: dir))
        #expect(plain.reconstruction == LiveReconstructionSpec())
        #expect(!plain.denoise.enabled)

        let every = try #require(loadError(base + "\nreconstruction: {estimate: \"every:0\"}\n"))
        #expect(every.message.contains("every:N") && every.place?.contains("p.yaml:9:") == true, "\(every)")
        let wiener = try #require(loadError(base + "\nreconstruction: {wiener: 20}\n"))
        #expect(wiener.message.contains("reconstruction.wiener"), "\(wiener)")
        let history = try #require(loadError(base + "\ndenoise: {pairs: odd-even, context: history}\n"))
        #expect(history.message.contains("cannot be used with pairs: odd-even"), "\(history)")
        // The warm-up before the first denoised frame: unset (the stage's default), or 0…100 000 steps.
        #expect(p.denoise.firstSteps == nil)
        let warm = try AcquisitionProtocol.load(
            file: Fixtures.write(base + "\ndenoise: {first_steps: 40}\n", to: "warm.yaml", in: dir))
        #expect(warm.denoise.firstSteps == 40)
        let negative = try #require(loadError(base + "\ndenoise: {first_steps: -1}\n"))
        #expect(negative.message.contains("first_steps") && negative.place?.contains("p.yaml:9:") == true, "\(negative)")
    }

    /// `outputs.recording_format` gives its suffix to a recording path without one, keeps a path
    /// that already has it, and refuses a path whose suffix names the other format (at its line),
    /// or a format it does not know.
    @Test func aStatedRecordingFormatGivesItsSuffixAndRefusesTheOther() throws {
        let zarr = try AcquisitionProtocol.load(
            file: Fixtures.write(
                base + "\noutputs: {recording: runs/cells, recording_format: ome-zarr}\n", to: "zarr.yaml", in: dir))
        #expect(zarr.outputs.recordingFormat == .omeZarr)
        #expect(zarr.outputs.recording == "\(dir)/runs/cells.ome.zarr")
        let kept = try AcquisitionProtocol.load(
            file: Fixtures.write(
                base + "\noutputs: {recording: cells.ome.tif, recording_format: ome-tiff}\n", to: "tif.yaml", in: dir))
        #expect(kept.outputs.recording == "\(dir)/cells.ome.tif")
        let plain = try AcquisitionProtocol.load(file: Fixtures.write(base, to: "plainfmt.yaml", in: dir))
        #expect(plain.outputs.recordingFormat == nil)
        let clash = try #require(loadError(base + "\noutputs: {recording: cells.ome.tif, recording_format: ome-zarr}\n"))
        #expect(clash.message.contains("names ome-tiff") && clash.place?.contains("p.yaml:9:") == true, "\(clash)")
        let unknown = try #require(loadError(base + "\noutputs: {recording_format: hdf5}\n"))
        #expect(unknown.message.contains("ome-tiff, ome-zarr"), "\(unknown)")
    }

    /// A protocol knows itself by its absolute, standardized path (what the wire's `start` and
    /// recordings name), however the path was written.
    @Test func aProtocolIsKnownByItsAbsolutePath() throws {
        let file = Fixtures.write(base, to: "where.yaml", in: dir)
        let roundabout = "\(dir)/nowhere/../where.yaml"
        #expect(try AcquisitionProtocol.load(file: roundabout).file == file)
        let cwd = FileManager.default.currentDirectoryPath
        let upwards = String(repeating: "../", count: cwd.split(separator: "/").count)
        #expect(try AcquisitionProtocol.load(file: upwards + file.dropFirst()).file == file)
    }

    /// A useq-schema MDASequence gives the time points, the z stack (range centred on the stage's
    /// home, or top and bottom) and the channels (by name, with their exposures); what Moiré cannot
    /// acquire is refused at its place in the sequence file.
    @Test func aUseqSequenceGivesTimeZAndChannels() throws {
        let twoChannels = base.replacingOccurrences(
            of: "channels:\n  - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 5, pattern_set: sim488}",
            with: """
                channels:
                  - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 5, pattern_set: sim488}
                  - {name: red, laser: l560, power_mw: 10, exposure_ms: 5, pattern_set: sim560}
                """)
        func load(_ sequence: String) throws -> AcquisitionProtocol {
            _ = Fixtures.write(sequence, to: "seq.yaml", in: dir)
            return try AcquisitionProtocol.load(file: Fixtures.write(twoChannels + "\nsequence: seq.yaml\n", to: "useq.yaml", in: dir))
        }
        let p = try load("""
            axis_order: [t, p, c, z]
            channels: [{config: red, exposure: 7.5}, {config: gfp}]
            time_plan: {interval: "0:00:01.5", loops: 4}
            z_plan: {range: 2.0, step: 0.5}
            metadata: {anything: 1}
            """)
        #expect(p.timepoints == 4 && p.intervalMs == 1500)
        #expect(p.channels.map(\.name) == ["red", "gfp"] && p.channels.map(\.exposureMs) == [7.5, 5])
        #expect(p.zPlanes == 5 && p.zStepUm == 0.5 && p.hasZ)
        let home = try #require(p.rig.stage?.profile.stage?.homeUm)
        #expect(abs(p.zStartUm - (home - 1)) < 1e-9)
        let down = try load("z_plan: {top: \(home + 1), bottom: \(home), step: 0.25, go_up: false}\n")
        #expect(down.zPlanes == 5 && down.zStepUm == -0.25 && abs(down.zStartUm - (home + 1)) < 1e-9)
        #expect(down.channels.map(\.name) == ["gfp", "red"] && down.timepoints == 1)

        for (sequence, words) in [
            ("stage_positions: [{x: 1, y: 2}, {x: 3, y: 4}]\n", "one stage position"),
            ("axis_order: tpzc\n", "axis_order tpcz"), ("channels: [{config: blue}]\n", "not one of the protocol's"),
            ("grid_plan: {rows: 2, columns: 2}\n", "grid_plan"), ("z_plan: {range: 9000, step: 1}\n", "outside the stage"),
            ("channels: [{config: gfp, exposure: 1000000}]\n", "exposure"),
        ] {
            do {
                _ = try load(sequence)
                Issue.record("accepted: \(sequence)")
            } catch let error as MoireError {
                #expect(error.message.contains(words), "\(sequence): \(error)")
                #expect(error.place?.contains("seq.yaml") == true, "\(sequence): \(error)")
            }
        }
        let both = try #require(loadError(twoChannels + "\nsequence: seq.yaml\ntimelapse: {count: 2}\n"))
        #expect(both.message.contains("remove 'timelapse'"), "\(both)")
    }

    @Test func shippedProtocolsLoad() throws {
        let tirf = try AcquisitionProtocol.load(file: Fixtures.path("sim-hardware/protocols/tirf-sim.yaml"))
        #expect(tirf.totalFrames == 180)
        #expect(tirf.roiWidth == 512 && tirf.angles == 3 && tirf.phases == 3 && tirf.timepoints == 20)
        #expect(abs(tirf.pixelSizeUm - 0.065) < 1e-9)
        let two = try AcquisitionProtocol.load(file: Fixtures.path("sim-hardware/protocols/gi-sim-2color.yaml"))
        #expect(two.channels.map(\.name) == ["gfp", "mcherry"])
        let wf = try AcquisitionProtocol.load(file: Fixtures.path("sim-hardware/protocols/widefield.yaml"))
        #expect(wf.mode == .widefield && wf.zPlanes == 5 && wf.hasZ)
    }

    @Test func patternSetsStateWaveVectors() throws {
        let rig = try Rig.load(file: Fixtures.path("sim-hardware/rigs/multisim.yaml"))
        let set = try #require(rig.modulator?.profile.modulator?.patternSet(named: "sim488"))
        #expect(set.angles == 3 && set.phases == 3)
        for p in set.patterns {
            let k = (p.kx * p.kx + p.ky * p.ky).squareRoot()
            #expect(abs(k - 2 * 1.35 / 0.488) < 1e-3)
        }
        #expect(rig.modes.contains(.sim2d) && rig.leader == .modulator)
    }

    @Test func yamlSyntaxErrorNamesLineAndColumn() throws {
        let e = try #require(loadError("moire: 1\nname: [unclosed\nmode: sim2d\n"))
        #expect(e.place?.hasSuffix("p.yaml:3:5") == true || e.place?.contains("p.yaml:") == true)
        #expect(e.message.contains("syntax"))
    }

    @Test func unknownFieldIsRejectedAtItsLine() throws {
        let e = try #require(loadError(base + "\nexposur_ms: 5\n"))
        #expect(e.place?.hasSuffix("p.yaml:9:1") == true)
        #expect(e.message.contains("unknown field 'exposur_ms'"))
    }

    @Test func exposureOutsideCameraRangeNamesField() throws {
        let y = base.replacingOccurrences(of: "exposure_ms: 5", with: "exposure_ms: 20000")
        let e = try #require(loadError(y))
        #expect(e.message.contains("channels[0].exposure_ms"))
        #expect(e.message.contains("out of range"))
        #expect(e.place?.hasSuffix("p.yaml:7:57") == true)
    }

    @Test func unknownDeviceIsNamed() throws {
        let e = try #require(loadError(base.replacingOccurrences(of: "laser: l488", with: "laser: l640")))
        #expect(e.message.contains("unknown device 'l640'"))
        #expect(e.place?.contains("p.yaml:7:") == true)
    }

    @Test func modeTheRigCannotDoIsRejected() throws {
        let profiles = Fixtures.path("sim-hardware/profiles")
        let rig = Fixtures.write("""
        moire: 1
        name: widefield only
        devices:
          camera: {profile: \(profiles)/camera-sim-scmos.yaml}
          lasers: [{name: l488, profile: \(profiles)/laser-sim-488.yaml}]
        optics: {objective_na: 1.4, magnification: 60, immersion_index: 1.518}
        """, to: "wf-rig.yaml", in: dir)
        let e = try #require(loadError(base.replacingOccurrences(of: Fixtures.path("sim-hardware/rigs/multisim.yaml"), with: rig)))
        #expect(e.message.contains("cannot do mode 'sim2d'"))
        #expect(e.place?.hasSuffix("p.yaml:4:7") == true)
    }

    @Test func missingRequiredFieldIsNamed() throws {
        let e = try #require(loadError(base.replacingOccurrences(of: "name: t\n", with: "")))
        #expect(e.message.contains("missing required field 'name'"))
    }

    @Test func profileErrorsPointIntoTheProfile() throws {
        let p = Fixtures.write("""
        moire: 1
        kind: camera
        model: broken
        driver: sim
        capabilities: {sensor: [2048, 2048], pixel_um: 6.5, exposure_ms: [10, 1]}
        timing: {readout_ms: 10}
        calibration: {offset_adu: 100, gain_adu_per_e: 0.5, read_noise_e: 1}
        """, to: "cam.yaml", in: dir)
        #expect(throws: MoireError.self) { try DeviceProfile.load(file: p) }
        do { _ = try DeviceProfile.load(file: p) } catch let e as MoireError {
            #expect(e.message.contains("capabilities.exposure_ms"))
            #expect(e.place?.hasSuffix("cam.yaml:5:66") == true)
        }
    }

    /// A camera's noise correlation by pixel offset: one of each ± pair kept (−1,0 is 1,0), and
    /// offsets beyond the lags measured, 0,0, a pair given twice or |ρ| ≥ 1 refused at their line.
    @Test func aCameraProfileStatesItsNoiseCorrelation() throws {
        func camera(_ correlation: String) -> String {
            Fixtures.write(
                """
                moire: 1
                kind: camera
                model: binned
                driver: sim
                capabilities: {sensor: [2048, 2048], pixel_um: 6.5, exposure_ms: [1, 10]}
                timing: {readout_ms: 10}
                calibration:
                  offset_adu: 100
                  gain_adu_per_e: 0.5
                  read_noise_e: 1
                  noise_correlation: \(correlation)
                """, to: "noisecam.yaml", in: dir)
        }
        let profile = try DeviceProfile.load(file: camera(#"{"-1,0": 0.6, "0,1": 0.5, "1,1": 0.25}"#))
        let lags = try #require(profile.camera).noiseCorrelation
        #expect(
            lags == [NoiseLag(dx: 1, dy: 0, rho: 0.6), NoiseLag(dx: 0, dy: 1, rho: 0.5), NoiseLag(dx: 1, dy: 1, rho: 0.25)])
        for (bad, says) in [
            (#"{"3,0": 0.2}"#, "|dx|, |dy| ≤ 2"), (#"{"0,0": 1}"#, "not 0,0"), (#"{"x": 0.1}"#, "dx,dy"),
            (#"{"1,0": 0.5, "-1,0": 0.5}"#, "twice"), (#"{"1,0": 1.2}"#, "noise_correlation"),
        ] {
            do {
                _ = try DeviceProfile.load(file: camera(bad))
                Issue.record("accepted \(bad)")
            } catch let e as MoireError {
                #expect(e.message.contains(says) && e.place?.contains("noisecam.yaml:11:") == true, "\(bad): \(e)")
            }
        }
    }

    @Test func wrongTypeIsReportedWithExpectation() throws {
        let e = try #require(loadError(base.replacingOccurrences(of: "angles: 3", with: "angles: three")))
        #expect(e.message.contains("sim.angles"))
        #expect(e.message.contains("expected a whole number"))
    }

    /// The security issue's R7: hostile or careless YAML gets a short message at its line, never the file back.
    @Test func duplicateKeysNonUTF8TextLongScalarsAndHugeFilesAreReportedAtTheirPlace() throws {
        let block = "\nreconstruction:\n  wiener: 0.1\n  backlog: 3\n  wiener: 0.2\n"
        let duplicate = loadError(base + block + "secret: hunter2\n")
        let lines = (base + block).split(separator: "\n", omittingEmptySubsequences: false)
        let second = lines.lastIndex { $0.hasPrefix("  wiener:") }! + 1
        let first = lines.firstIndex { $0.hasPrefix("  wiener:") }! + 1
        #expect(duplicate?.kind == .config)
        #expect(duplicate?.place?.hasSuffix("p.yaml:\(second):3") == true, "\(String(describing: duplicate))")
        #expect(duplicate?.message.contains("'wiener'") == true && duplicate?.message.contains("line \(first)") == true)
        #expect(duplicate.map { !"\($0)".contains("hunter2") && "\($0)".count < 300 } == true)

        var bytes = Array("moire: 1\nname: caf".utf8)
        bytes += [0xC3, 0x28]  // a broken two-byte sequence
        bytes += Array(" bar\n".utf8)
        let binary = "\(dir)/binary.yaml"
        try Data(bytes).write(to: URL(fileURLWithPath: binary))
        do { _ = try AcquisitionProtocol.load(file: binary); Issue.record("accepted non-UTF-8 text") } catch let e as MoireError {
            #expect(e.kind == .config && e.place == "\(binary):2:10" && e.message.contains("0xC3"), "\(e)")
        }

        let long = String(repeating: "x", count: 100_000)
        let scalar = loadError(base + "\nreconstruction: \(long)\n")
        #expect(scalar?.message.contains("found the scalar") == true, "\(String(describing: scalar).prefix(300))")
        #expect(scalar.map { "\($0)".count < 400 } == true, "\(String(describing: scalar).prefix(300))")

        let huge = "\(dir)/huge.yaml"
        try Data(repeating: 0x61, count: Int(ConfigNode.maximumFileBytes) + 1).write(to: URL(fileURLWithPath: huge))
        do { _ = try AcquisitionProtocol.load(file: huge); Issue.record("read a file beyond the limit") } catch let e as MoireError {
            #expect(e.message.contains("limited to"), "\(e)")
        }
        #expect(ConfigNode.excerpt(long).count == 61 && ConfigNode.excerpt("a\nb") == "a…" && ConfigNode.excerpt("ab") == "ab")
    }
}

@Suite struct RigOTFTests {
    @Test func rigNamesAMeasuredOTFThatMustExist() throws {
        let dir = Fixtures.tempDir("rigotf")
        let profiles = Fixtures.path("sim-hardware/profiles")
        func rig(_ otf: String) -> String {
            Fixtures.write("""
            moire: 1
            name: r
            devices:
              camera: {profile: \(profiles)/camera-sim-scmos.yaml}
            optics: {objective_na: 1.4, magnification: 60, immersion_index: 1.518, otf: \(otf), otf_attenuation: 0.9}
            """, to: "rig.yaml", in: dir)
        }
        Fixtures.write("not really an MRC", to: "otf.mrc", in: dir)
        let r = try Rig.load(file: rig("otf.mrc"))
        #expect(r.otfFile == "\(dir)/otf.mrc" && r.otfAttenuation == 0.9)
        do { _ = try Rig.load(file: rig("missing.mrc")); Issue.record("accepted") } catch let e as MoireError {
            #expect(e.message.contains("optics.otf") && e.message.contains("does not exist"))
            #expect(e.place?.contains("rig.yaml:5:") == true)
        }
    }
}

/// Device profiles of the real driver families: every shipped profile and rig loads; a profile that
/// cannot drive its device is refused at load, naming the place.
@Suite struct HardwareProfileTests {
    let dir = Fixtures.tempDir("hw-profiles")

    func error(_ yaml: String) -> String {
        let p = Fixtures.write(yaml, to: "p-\(UUID().uuidString.prefix(6)).yaml", in: dir)
        do { _ = try DeviceProfile.load(file: p); return "" } catch { return "\(error)" }
    }

    @Test func shippedProfilesAndTheDMDRigLoad() throws {
        let rig = try Rig.load(file: Fixtures.path("hardware-profiles/rigs/dmd-sim.yaml"))
        #expect(rig.camera.profile.driver == .usb3vision && rig.modulator?.profile.driver == .dlpc900)
        #expect(rig.allDevices.allSatisfy { $0.connect == .simulatedPeer })
        #expect(rig.modes.contains(.sim2d) && rig.leader == .modulator)
        let dmd = try #require(rig.modulator?.profile.modulator)
        #expect(dmd.patternSets.flatMap(\.patterns).allSatisfy { $0.dmd != nil } && dmd.uniformDMD == DMDImage(image: 1, bit: 0))
        let laser = try #require(rig.laser(named: "l488")?.profile.serial)
        #expect(laser.values["ttl"] == "1" && laser.commands["power"]?.counts(200) == 49151)
        // The foundation's 2D-SIM protocol validates unchanged against the DMD rig, and against the real one.
        let p = try AcquisitionProtocol.load(file: Fixtures.path("sim-hardware/protocols/tirf-sim.yaml"), rigFile: rig.file)
        #expect(p.rig.name == rig.name && p.totalFrames == 180)
        let real = try Rig.load(file: Fixtures.path("hardware-profiles/rigs/dmd.yaml"))
        #expect(real.allDevices.allSatisfy { $0.connect == .device } && real.specimen == nil)
        #expect(real.allDevices.map(\.profile) == rig.allDevices.map(\.profile))
    }

    @Test func profilesThatCannotDriveTheirDeviceAreRefused() {
        let serialHead = "moire: 1\nkind: scanner\nmodel: g\ndriver: serial-ascii\nconnection: {port: /dev/ttyACM0}\ncapabilities: {range_v: [-10, 10], park_v: 0}\ncalibration: {um_per_v: 1}\n"
        #expect(error(serialHead).contains("needs a serial block"))
        #expect(error(serialHead + "serial: {commands: {park: {send: \"P\"}}}\n").contains("needs the commands set"))
        let counts = error(serialHead + "serial: {commands: {set: {send: \"DAC1,{counts}\"}}}\n")
        #expect(counts.contains("{counts}") && counts.contains(":8:"))
        #expect(error(serialHead + "serial: {commands: {set: {send: \"DAC1,{counts}\", from: [10, -10], to: [0, 1]}}}\n").contains("low < high"))
        let modHead = "moire: 1\nkind: modulator\nmodel: d\ndriver: dlpc900\ncapabilities: {sequence_max: 10, trigger_out: true}\n"
        let pat = "pattern_sets:\n  - {name: s, wavelength_nm: 488, patterns: [{index: 0, angle: 0, phase: 0, kx_per_um: 1, ky_per_um: 0, phase_rad: 0, modulation: 0.8%@}]}\n"
        #expect(error(modHead + "dmd_uniform: [1, 0]\n" + pat.replacingOccurrences(of: "%@", with: "")).contains("patterns 0 have no dmd"))
        #expect(error(modHead + pat.replacingOccurrences(of: "%@", with: ", dmd: [0, 0]")).contains("dmd_uniform"))
        #expect(error(modHead + "dmd_uniform: [1, 24]\n" + pat.replacingOccurrences(of: "%@", with: ", dmd: [0, 0]")).contains("bit plane must be 0…23"))
        #expect(error(modHead + "dmd_uniform: [1, 0]\n" + pat.replacingOccurrences(of: "%@", with: ", dmd: [0, 0]")) == "")
    }

    @Test func simulatedPeerNeedsARealDriver() throws {
        let rig = Fixtures.write("""
        moire: 1
        name: r
        devices:
          camera: {profile: \(Fixtures.path("sim-hardware/profiles/camera-sim-scmos.yaml")), connect: simulated-peer}
        optics: {objective_na: 1.4, magnification: 60, immersion_index: 1.518}
        """, to: "rig-peer.yaml", in: dir)
        do { _ = try Rig.load(file: rig); Issue.record("accepted") } catch let e as MoireError {
            #expect(e.message.contains("already simulated") && (e.place ?? "").contains("rig-peer.yaml:4"))
        }
    }
}
