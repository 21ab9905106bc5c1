import Foundation
import MoireConfig
import MoireCore

/// Builds a rig's devices from its profiles: simulated twins for `driver: sim`.
public enum DeviceFactory {
    /// Devices for `rig`. Drivers other than `sim` are not built into this release and say so.
    public static func make(rig: Rig, clock: MoireClock = RealClock(), world: SimWorld = SimWorld(), seed: UInt64 = 1) throws -> RigDevices {
        func requireSim(_ d: RigDevice) throws {
            guard d.profile.driver == .sim else {
                throw MoireError(.unsupported, "driver '\(d.profile.driver.rawValue)' for \(d.profile.kind.rawValue) '\(d.name)' is not available in this build; use a rig of simulated devices",
                                 place: d.profile.file)
            }
        }
        for d in rig.allDevices { try requireSim(d) }
        let camera = SimulatedCamera(name: rig.camera.name, profile: rig.cameraProfile, world: world, specimen: rig.specimen,
                                     optics: rig.optics, clock: clock, seed: seed, lightSheet: rig.lightSheet)
        let modulator = try rig.modulator.map { d -> SimulatedModulator in
            let m = SimulatedModulator(name: d.name, profile: d.profile.modulator!, world: world, clock: clock)
            func opt(_ key: String, _ def: Double) throws -> Double {
                guard let t = d.profile.extra[key] else { return def }
                guard let v = Double(t), v.isFinite else {
                    throw MoireError(.config, "driver_options.\(key) must be a number; found '\(t)'", place: d.profile.file)
                }
                return v
            }
            m.patternError = PatternError(kScale: try opt("k_scale", 1), rotationDeg: try opt("rotation_deg", 0),
                                          phaseOffsetRad: try opt("phase_offset_rad", 0))
            return m
        }
        let scanner = rig.scanner.map { SimulatedScanner(name: $0.name, profile: $0.profile.scanner!, world: world) }
        let stage = rig.stage.map { SimulatedStage(name: $0.name, profile: $0.profile.stage!, world: world, clock: clock) }
        var lasers: [String: Laser] = [:]
        for l in rig.lasers { lasers[l.name] = SimulatedLaser(name: l.name, profile: l.profile.laser!, world: world) }
        return RigDevices(rig: rig, camera: camera, modulator: modulator, scanner: scanner, stage: stage, lasers: lasers)
    }
}
