import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation

/// Simulated SIM data with known truth, for the reconstruction tests.
public struct SimulatedSIMData {
    /// Phase sets: `sets[t][angle · phases + phase]`, each `roi × roi` floats (ADU).
    public var sets: [[[Float]]]
    /// The patterns really projected, per angle (phase 0): the ground truth of the estimate.
    public var truth: [PatternSpec]
    /// The nominal patterns of the profile (the prior).
    public var nominal: PatternSet
    public var proto: AcquisitionProtocol
    public var pixelUm: Double { proto.pixelSizeUm }
    public var offsetADU: Double { proto.rig.cameraProfile.offsetADU }
}

extension Fixtures {
    /// The simulated Multi-SIM rig with another specimen file, written into `dir`.
    public static func rig(withSpecimen specimen: String, in dir: String) throws -> String {
        let text = try String(contentsOfFile: path("sim-hardware/rigs/multisim.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../profiles", with: path("sim-hardware/profiles"))
            .replacingOccurrences(of: "../specimens/filaments.yaml", with: specimen)
        return write(text, to: "rig.yaml", in: dir)
    }

    /// Acquires `timepoints` 2D-SIM phase sets on the simulated rig.
    public static func simulateSIM(
        roi: Int = 256, powerMw: Double = 100, exposureMs: Double = 20, timepoints: Int = 1,
        patternError: PatternError = PatternError(kScale: 1.004, rotationDeg: 0.3, phaseOffsetRad: 0.7),
        seed: UInt64 = 1, specimen: String? = nil, mode: String = "sim2d", phases: Int = 3,
        patternSet: String = "sim488"
    ) throws -> SimulatedSIMData {
        let dir = tempDir("simdata")
        let rigFile = try specimen.map { try Fixtures.rig(withSpecimen: $0, in: dir) }
        let file = smallProtocol(
            in: dir, mode: mode, roi: roi, timepoints: timepoints,
            channels:
                "  - {name: gfp, laser: l488, power_mw: \(powerMw), exposure_ms: \(exposureMs), emission_nm: 525, pattern_set: \(patternSet)}\n",
            rig: rigFile, frameDeadlineMs: 5000, phases: phases)
        let p = try AcquisitionProtocol.load(file: file)
        let clock = VirtualClock()
        let devices = try DeviceFactory.make(rig: p.rig, clock: clock, seed: seed)
        let mod = devices.modulator as! SimulatedModulator
        mod.patternError = patternError
        let set = p.rig.modulator!.profile.modulator!.patternSet(named: patternSet)!
        let runner = Runner(protocol: p, devices: devices, runID: "sim", clock: clock)
        var frames: [[Float]] = []
        let result = runner.run(
            pool: FramePool(slots: 8, bytes: roi * roi * 2),
            sink: { f in
                let px: [Float] = f.withPayload { raw in
                    let b = raw.bindMemory(to: UInt16.self)
                    return (0..<(roi * roi)).map { Float(b[$0]) }
                }
                frames.append(px)
                f.release()
            })
        guard result.reason == "completed", result.missing == 0 else {
            throw MoireError(.hardware, "simulation failed: \(result.reason) \(result.error?.description ?? "")")
        }
        let per = p.angles * p.phases
        let sets = stride(from: 0, to: frames.count, by: per).map { Array(frames[$0..<($0 + per)]) }
        let truth = (0..<p.angles).map { a in mod.projected(set.pattern(angle: a, phase: 0)!.index)! }
        return SimulatedSIMData(sets: sets, truth: truth, nominal: set, proto: p)
    }
}

/// A simulated widefield time-lapse with its noise-free truth (ADU).
public struct SimulatedWidefield {
    public var frames: [[Float]]
    public var truth: [Float]
    public var width: Int
    public var offset: Double, gain: Double, readVariance: Double
}

extension Fixtures {
    /// `count` widefield frames of the simulated rig (static specimen) and the expected image they are noisy copies of.
    public static func simulateWidefield(
        roi: Int = 128, powerMw: Double, exposureMs: Double, count: Int, seed: UInt64 = 1,
        specimen: String? = nil
    ) throws -> SimulatedWidefield {
        let dir = tempDir("wfdata")
        let rigFile = try specimen.map { try Fixtures.rig(withSpecimen: $0, in: dir) }
        let file = smallProtocol(
            in: dir, mode: "widefield", roi: roi, timepoints: count,
            channels:
                "  - {name: gfp, laser: l488, power_mw: \(powerMw), exposure_ms: \(exposureMs), emission_nm: 525}\n",
            rig: rigFile, frameDeadlineMs: 5000)
        let p = try AcquisitionProtocol.load(file: file)
        let clock = VirtualClock()
        let devices = try DeviceFactory.make(rig: p.rig, clock: clock, seed: seed)
        var frames: [[Float]] = []
        let n = roi * roi
        let r = Runner(protocol: p, devices: devices, runID: "wf", clock: clock).run(
            pool: FramePool(slots: 8, bytes: n * 2)
        ) { f in
            frames.append(
                f.withPayload { raw in
                    let b = raw.bindMemory(to: UInt16.self); return (0..<n).map { Float(b[$0]) }
                })
            f.release()
        }
        guard r.reason == "completed", r.missing == 0 else {
            throw MoireError(.hardware, "simulation failed: \(r.reason)")
        }
        // The camera's expected signal for a uniformly lit widefield frame, without noise.
        let cam = p.rig.cameraProfile
        let spec = p.rig.specimen!
        let model = try OpticalModel(
            specimen: spec, width: roi, height: roi, pixelUm: p.pixelSizeUm, na: p.rig.optics.objectiveNA)
        let b0 = try model.widefield(emissionNm: 488 + 37)
        let scale = spec.brightness * powerMw * exposureMs
        let bg = spec.background * powerMw * exposureMs
        let truth = b0.map { Float(cam.offsetADU + cam.gainADUPerE * cam.qe * (scale * Double($0) + bg)) }
        return SimulatedWidefield(
            frames: frames, truth: truth, width: roi, offset: cam.offsetADU, gain: cam.gainADUPerE,
            readVariance: pow(cam.readNoiseE * cam.gainADUPerE, 2))
    }
}
