import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoirePipeline
import MoireSimulation

/// Paths and files shared by the test targets.
public enum Fixtures {
    /// The package root (…/Sources/MoireTesting/Fixtures.swift → three levels up).
    public static let root: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }()

    public static func path(_ relative: String) -> String { "\(root)/\(relative)" }

    /// ../shared/data beside the checkout (nil when absent).
    public static var sharedData: String? {
        let p = URL(fileURLWithPath: root).deletingLastPathComponent().appendingPathComponent("shared/data").path
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }

    /// A fresh temporary directory.
    public static func tempDir(_ name: String = "moire-test") -> String {
        let d = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// An ipc control endpoint in a fresh directory that only this user may enter, as a daemon's
    /// control socket must be.
    public static func privateControlEndpoint() -> String {
        let directory = NSTemporaryDirectory() + "moire-control-\(UUID().uuidString.prefix(8))"
        mkdir(directory, 0o700)
        return "ipc://\(directory)/control.sock"
    }

    /// Writes `text` to `dir/name` and returns the path.
    @discardableResult
    public static func write(_ text: String, to name: String, in dir: String) -> String {
        let p = "\(dir)/\(name)"
        try? text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// A small protocol on the simulated Multi-SIM rig, written into `dir`.
    public static func smallProtocol(
        in dir: String, mode: String = "sim2d", roi: Int = 64, timepoints: Int = 2,
        exposureMs: Double = 2, extra: String = "", channels: String? = nil,
        rig: String? = nil, frameDeadlineMs: Int = 400, phases: Int = 3
    ) -> String {
        let rigPath = rig ?? path("sim-hardware/rigs/multisim.yaml")
        let sim =
            mode == "llssim"
            ? "sim: {angles: 1, phases: \(phases)}\n"
            : (mode.hasPrefix("sim") ? "sim: {angles: 3, phases: \(phases)}\n" : "")
        let ps = mode.hasPrefix("sim") || mode == "llssim" ? ", pattern_set: sim488" : ""
        let ch =
            channels
            ?? "  - {name: gfp, laser: l488, power_mw: 40, exposure_ms: \(exposureMs), emission_nm: 525\(ps)}\n"
        let text = """
            moire: 1
            name: test \(mode)
            rig: \(rigPath)
            mode: \(mode)
            camera: {roi: [\(roi), \(roi)]}
            channels:
            \(ch)\(sim)timelapse: {count: \(timepoints)}
            deadlines: {first_frame_ms: 2000, frame_ms: \(frameDeadlineMs)}
            \(extra)
            """
        return write(text, to: "protocol-\(mode)-\(UUID().uuidString.prefix(4)).yaml", in: dir)
    }

    /// A rig like multisim.yaml whose wiring is software-timed.
    public static func softwareRig(in dir: String) -> String {
        let profiles = path("sim-hardware/profiles")
        return write(
            """
            moire: 1
            name: software-timed test rig
            devices:
              camera: {name: cam, profile: \(profiles)/camera-sim-scmos.yaml}
              modulator: {name: slm, profile: \(profiles)/slm-sim.yaml}
              scanner: {name: galvo, profile: \(profiles)/galvo-sim.yaml}
              stage: {name: z, profile: \(profiles)/zstage-sim.yaml}
              lasers:
                - {name: l488, profile: \(profiles)/laser-sim-488.yaml}
                - {name: l560, profile: \(profiles)/laser-sim-560.yaml}
            optics: {objective_na: 1.49, magnification: 100, immersion_index: 1.518}
            wiring: {leader: software}
            simulation: {specimen: \(path("sim-hardware/specimens/filaments.yaml"))}
            """, to: "rig-software.yaml", in: dir)
    }

    /// Devices for a protocol on a virtual clock, with the command log on.
    public static func devices(for p: AcquisitionProtocol, clock: MoireClock = VirtualClock()) throws -> (
        RigDevices, SimWorld
    ) {
        let world = SimWorld()
        world.logEnabled = true
        return (try DeviceFactory.make(rig: p.rig, clock: clock, world: world), world)
    }
}
