import Foundation
import MoireCore

/// One imaging channel of a protocol.
public struct ChannelSpec: Sendable, Equatable, Codable {
    public var name: String
    public var laser: String
    public var powerMw: Double
    public var exposureMs: Double
    public var emissionNm: Double
    /// Modulator pattern set for SIM modes.
    public var patternSet: String?
}

/// Output settings of a protocol.
public struct OutputSpec: Sendable, Equatable, Codable {
    /// Recording path (resolved against the protocol's folder), or nil for no recording.
    public var recording: String?
    /// The recording's container when the protocol states it (`recording_format`); nil: the
    /// path's suffix decides. A stated format gives its suffix to a path that has none, here and
    /// to a `--out` path, and refuses a path whose suffix names the other format.
    public var recordingFormat: RecordingFormat?
    /// Result-bus endpoint (PUB); loopback by default.
    public var publish: String?
    /// Whether raw frames go out on the result bus too.
    public var publishRaw: Bool
    /// Bytes the result bus may queue for one subscriber before that subscriber misses messages.
    public var subscriberBufferBytes = 256 << 20
}

/// A validated acquisition protocol, with the rig it runs on.
public struct AcquisitionProtocol: Sendable, Equatable {
    public var file: String
    public var name: String
    public var rig: Rig
    public var mode: AcquisitionMode
    public var roiWidth: Int
    public var roiHeight: Int
    public var binning: Int
    public var channels: [ChannelSpec]
    public var angles: Int
    public var phases: Int
    public var timepoints: Int
    public var intervalMs: Double
    public var zPlanes: Int
    public var zStepUm: Double
    public var zStartUm: Double
    /// True when the protocol has a `z` block (the stage is driven); false leaves z alone.
    public var hasZ: Bool
    /// Live SIM reconstruction (2D, LLS-SIM, 3D).
    public var reconstruction: LiveReconstructionSpec
    /// Live denoising (off without a `denoise:` block).
    public var denoise: LiveDenoiseSpec
    /// Live light-sheet processing (mode llsm).
    public var lightSheet = LiveLightSheetSpec()
    public var outputs: OutputSpec
    public var firstFrameDeadlineMs: Double
    public var frameDeadlineMs: Double

    /// Planes per time point: channels × z × angles × phases.
    public var planesPerTimepoint: Int { channels.count * zPlanes * angles * phases }
    public var totalFrames: Int { planesPerTimepoint * timepoints }
    /// Pixel size in the sample, µm.
    public var pixelSizeUm: Double {
        rig.optics.samplePixelUm(cameraPixelUm: rig.cameraProfile.pixelUm, binning: binning)
    }

    /// Loads a protocol and its rig, checking every field against the rig's capabilities.
    /// `rigFile` runs the protocol on another rig than the one it names (the protocol is checked against it).
    /// Loads and checks a protocol; its `file` is the absolute path (what the wire's `start` and
    /// the recording name), whatever path was given.
    public static func load(file: String, rigFile: String? = nil) throws -> AcquisitionProtocol {
        let absolute = URL(fileURLWithPath: file).standardizedFileURL.path
        return try ConfigNode.withParsingLock { try parse(ConfigNode.load(file: absolute), rigFile: rigFile) }
    }

    public static func parse(_ root: ConfigNode, rigFile: String? = nil) throws -> AcquisitionProtocol {
        try root.checkVersion()
        let name = try root.required("name").string()
        let rigNode = try root.required("rig")
        let rig: Rig
        if let rigFile {
            rig = try Rig.loadLocked(file: rigFile)
        } else {
            let rigPath = root.resolvePath(try rigNode.string())
            do {
                rig = try Rig.loadLocked(file: rigPath)
            } catch let e as MoireError where e.kind == .io {
                throw rigNode.error("cannot load rig '\(rigPath)': \(e.message)")
            }
        }
        let modeNode = try root.required("mode")
        let mode = try modeNode.choice(AcquisitionMode.self)
        guard rig.modes.contains(mode) else {
            throw modeNode.error(
                "rig '\(rig.name)' cannot do mode '\(mode.rawValue)'; it can do: \(rig.modes.map(\.rawValue).joined(separator: ", "))"
            )
        }
        let cam = rig.cameraProfile

        // Camera ROI and binning.
        var roiW = min(512, cam.sensorWidth)
        var roiH = min(512, cam.sensorHeight)
        var binning = 1
        if let cn = try root.child("camera") {
            if let bn = try cn.child("binning") {
                binning = try bn.int()
                guard cam.binning.contains(binning) else {
                    throw bn.error(
                        "binning \(binning) is not supported by camera '\(rig.camera.profile.model)'; expected one of \(cam.binning)"
                    )
                }
            }
            if let rn = try cn.child("roi") {
                let r = try rn.ints(count: 2)
                let maxW = cam.sensorWidth / binning
                let maxH = cam.sensorHeight / binning
                guard r[0] >= cam.roiMin, r[1] >= cam.roiMin, r[0] <= maxW, r[1] <= maxH else {
                    throw rn.error(
                        "ROI \(r[0])×\(r[1]) is outside the camera's limits \(cam.roiMin)…\(maxW) × \(cam.roiMin)…\(maxH) pixels"
                    )
                }
                roiW = r[0]; roiH = r[1]
            }
            try cn.finish()
        }

        // SIM pattern set dimensions.
        var angles = 1
        var phases = 1
        let simNode = try root.child("sim")
        if mode.needsPatterns {
            guard let simNode else {
                throw root.error("mode '\(mode.rawValue)' needs a 'sim' block with angles and phases")
            }
            angles = try simNode.required("angles").int(in: 1...16)
            phases = try simNode.required("phases").int(in: 2...16)
            if mode == .llssim, angles != 1 {
                throw try simNode.required("angles").error("llssim uses one orientation; expected 1")
            }
            try simNode.finish()
        } else if let simNode {
            throw simNode.error("a 'sim' block is only allowed in the modes sim2d, sim3d and llssim")
        }

        // Channels.
        var channels: [ChannelSpec] = []
        for cn in try root.required("channels").list() {
            let cname = try cn.required("name").string()
            guard cname.range(of: "^[A-Za-z0-9_-]+$", options: .regularExpression) != nil else {
                throw try cn.required("name").error("channel name '\(cname)' may use letters, digits, '-' and '_' only")
            }
            if channels.contains(where: { $0.name == cname }) { throw cn.error("duplicate channel name '\(cname)'") }
            let ln = try cn.required("laser")
            let laserName = try ln.string()
            guard let laser = rig.laser(named: laserName)?.profile.laser else {
                throw ln.error(
                    "unknown device '\(laserName)': the rig has lasers \(rig.lasers.map(\.name).joined(separator: ", "))"
                )
            }
            let power = try cn.required("power_mw").double(in: 0...laser.maxPowerMw, unit: " mW")
            let exposure = try cn.required("exposure_ms").double(in: cam.exposureMs, unit: " ms")
            let emission =
                try cn.optionalDouble("emission_nm", in: 200...2000, unit: " nm") ?? (laser.wavelengthNm + 30)
            var patternSet: String?
            if mode.needsPatterns {
                let pn = try cn.required("pattern_set")
                let ps = try pn.string()
                guard let set = rig.modulator?.profile.modulator?.patternSet(named: ps) else {
                    let names = rig.modulator?.profile.modulator?.patternSets.map(\.name) ?? []
                    throw pn.error("unknown pattern set '\(ps)'; the modulator has: \(names.joined(separator: ", "))")
                }
                for a in 0..<angles {
                    for p in 0..<phases where set.pattern(angle: a, phase: p) == nil {
                        throw pn.error(
                            "pattern set '\(ps)' has no pattern for angle \(a), phase \(p) (it has \(set.angles) angles × \(set.phases) phases)"
                        )
                    }
                }
                patternSet = ps
            } else if let pn = try cn.child("pattern_set") {
                throw pn.error("pattern_set is only used in SIM modes")
            }
            try cn.finish()
            channels.append(
                ChannelSpec(
                    name: cname, laser: laserName, powerMw: power, exposureMs: exposure,
                    emissionNm: emission, patternSet: patternSet))
        }
        if channels.isEmpty { throw try root.required("channels").error("expected at least one channel") }

        // A useq-schema MDASequence for the time, z and channel parts (pymmcore-plus's schema).
        var sequence: UseqSequence?
        if let sn = try root.child("sequence") {
            let path = root.resolvePath(try sn.string())
            guard FileManager.default.fileExists(atPath: path) else {
                throw sn.error("sequence file '\(path)' does not exist")
            }
            sequence = try UseqSequence.load(file: path)
            for block in ["timelapse", "z"] {
                if let node = try root.child(block) {
                    throw node.error("the sequence (\(path)) gives the time points and the z stack; remove '\(block)'")
                }
            }
        }
        if let sequence, !sequence.channels.isEmpty {
            let defined = channels
            channels = try sequence.channels.map { chosen in
                guard var channel = defined.first(where: { $0.name == chosen.config }) else {
                    throw MoireError(
                        .config,
                        "channel '\(chosen.config)' is not one of the protocol's channels (\(defined.map(\.name).joined(separator: ", ")))",
                        place: chosen.place)
                }
                if let exposure = chosen.exposureMs {
                    guard cam.exposureMs.contains(exposure) else {
                        throw MoireError(
                            .config,
                            "exposure \(fmt(exposure)) ms is outside the camera's \(fmt(cam.exposureMs.lowerBound))…\(fmt(cam.exposureMs.upperBound)) ms",
                            place: chosen.place)
                    }
                    channel.exposureMs = exposure
                }
                return channel
            }
            if Set(channels.map(\.name)).count != channels.count {
                throw MoireError(.config, "the sequence names a channel twice", place: sequence.file)
            }
        }

        // Time-lapse.
        var timepoints = sequence?.timepoints ?? 1
        var interval = sequence?.intervalMs ?? 0
        if let tn = try root.child("timelapse") {
            timepoints = try tn.required("count").int(in: 1...10_000_000)
            interval = try tn.optionalDouble("interval_ms", in: 0...86_400_000, unit: " ms") ?? 0
            try tn.finish()
        }

        // Z.
        var zPlanes = 1
        var zStep = 0.0
        var zStart = 0.0
        let zNode = try root.child("z")
        let hasZ = zNode != nil || sequence?.z != nil
        /// What moves in z, its range and its home (µm); `node` is where a missing stage is reported.
        func zAxis(_ place: () -> MoireError) throws -> (range: ClosedRange<Double>, home: Double, what: String) {
            let galvoScan = (mode == .llsm || mode == .llssim) && rig.lightSheet?.scan == .galvo
            if galvoScan, let sc = rig.scanner?.profile.scanner {
                return (
                    (sc.rangeV.lowerBound * sc.umPerV)...(sc.rangeV.upperBound * sc.umPerV), sc.parkV * sc.umPerV,
                    "galvo scan"
                )
            }
            guard let stage = rig.stage?.profile.stage else { throw place() }
            return (stage.rangeUm, stage.homeUm, "stage")
        }
        if let sequence, let zPlace = sequence.zPlace {
            let missing = MoireError(.config, "a z stack needs a stage; rig '\(rig.name)' has none", place: zPlace)
            let (range, home, what) = try zAxis { missing }
            let stack = sequence.zStack(home: home)!
            let end = stack.startUm + Double(stack.planes - 1) * stack.stepUm
            guard (1...100_000).contains(stack.planes), range.contains(stack.startUm), range.contains(end) else {
                throw MoireError(
                    .config,
                    "the z stack (\(stack.planes) planes, \(fmt(stack.startUm))…\(fmt(end)) µm) is outside the \(what)'s range \(fmt(range.lowerBound))…\(fmt(range.upperBound)) µm",
                    place: zPlace)
            }
            (zPlanes, zStart, zStep) = (stack.planes, stack.startUm, stack.stepUm)
        }
        if let zn = zNode {
            zPlanes = try zn.required("planes").int(in: 1...100_000)
            zStep = try zn.optionalDouble("step_um", in: -1000...1000, unit: " µm") ?? 0
            let (range, home, what) = try zAxis { zn.error("a z range needs a stage; rig '\(rig.name)' has none") }
            zStart = try zn.optionalDouble("start_um", in: range, unit: " µm") ?? home
            let end = zStart + Double(zPlanes - 1) * zStep
            guard range.contains(end) else {
                throw zn.error(
                    "z range ends at \(fmt(end)) µm, outside the \(what)'s range \(fmt(range.lowerBound))…\(fmt(range.upperBound)) µm"
                )
            }
            if mode == .llsm, zStep <= 0 {
                throw try zn.child("step_um")?.error(
                    "the light-sheet scan step must be positive; found \(fmt(zStep)) µm")
                    ?? zn.error("a light-sheet stack needs a positive step_um")
            }
            if zPlanes > 1, zStep == 0 { throw zn.error("step_um must be non-zero for more than one plane") }
            try zn.finish()
        }
        if mode == .sim3d, zPlanes < 2 { throw root.error("mode sim3d needs a 'z' block with at least 2 planes") }
        if mode == .llsm, zPlanes < 2 {
            throw (zNode ?? root).error("mode llsm needs a 'z' block (the scan) with at least 2 planes")
        }
        var lightSheet = LiveLightSheetSpec()
        var sourceNode: ConfigNode?
        if let ln = try root.child("light_sheet") {
            guard mode == .llsm else { throw ln.error("a 'light_sheet' block is only allowed in mode llsm") }
            lightSheet = try LiveLightSheetSpec(ln, sourceNode: &sourceNode)
        }

        if rig.leader == .modulator, let mp = rig.modulator?.profile.modulator {
            let seqLen = channels.count * angles * phases
            if seqLen > mp.sequenceMax {
                throw modeNode.error(
                    "a time point needs a sequence of \(seqLen) patterns; the modulator holds at most \(mp.sequenceMax)"
                )
            }
        }

        let reconstruction = try root.child("reconstruction").map { try LiveReconstructionSpec($0) }
        let denoise = try root.child("denoise").map { try LiveDenoiseSpec($0) } ?? LiveDenoiseSpec()
        if lightSheet.source == .denoised, let sn = sourceNode, !denoise.enabled {
            throw sn.error("source: denoised needs live denoising (a 'denoise' block that is not disabled)")
        }

        var outputs = OutputSpec(recording: nil, publish: nil, publishRaw: true)
        if let on = try root.child("outputs") {
            outputs.recording = try on.optionalString("recording").map { root.resolvePath($0) }
            if let fn = try on.child("recording_format") {
                let format = try fn.choice(RecordingFormat.self)
                outputs.recordingFormat = format
                if let path = outputs.recording {
                    do {
                        outputs.recording = try format.recordingPath(path)
                    } catch let e as MoireError {
                        throw fn.error(e.message)
                    }
                }
            }
            if let pn = try on.child("publish") {
                let ep = try pn.string()
                if let problem = EndpointRule.bindProblem(ep) { throw pn.error("publish '\(ep)': \(problem)") }
                outputs.publish = ep
            }
            outputs.publishRaw = try on.optionalBool("publish_raw") ?? true
            if let mb = try on.optionalInt("subscriber_buffer_mb", in: 1...65_536) {
                outputs.subscriberBufferBytes = mb << 20
            }
            try on.finish()
        }

        var firstDeadline = 5000.0
        var frameDeadline = 1000.0
        if let dn = try root.child("deadlines") {
            firstDeadline = try dn.optionalDouble("first_frame_ms", in: 1...3_600_000, unit: " ms") ?? firstDeadline
            frameDeadline = try dn.optionalDouble("frame_ms", in: 1...3_600_000, unit: " ms") ?? frameDeadline
            try dn.finish()
        }
        try root.finish()
        return AcquisitionProtocol(
            file: root.file, name: name, rig: rig, mode: mode, roiWidth: roiW, roiHeight: roiH,
            binning: binning, channels: channels, angles: angles, phases: phases,
            timepoints: timepoints, intervalMs: interval, zPlanes: zPlanes, zStepUm: zStep,
            zStartUm: zStart, hasZ: hasZ, reconstruction: reconstruction ?? LiveReconstructionSpec(), denoise: denoise,
            lightSheet: lightSheet,
            outputs: outputs, firstFrameDeadlineMs: firstDeadline, frameDeadlineMs: frameDeadline)
    }
}
