import Foundation
import MoireConfig
import MoireCore
import MoireHardware

/// The in-process peers of a rig's `simulated-peer` devices and the wires between them: the USB3
/// Vision camera (its sensor the physical camera simulation), the DLPC900 (what its mirrors show
/// drives a simulated modulator on the bench; its trigger out drives the camera's trigger input),
/// and serial controllers on pseudo-terminals (each accepted command line moves the simulated laser,
/// galvo or stage it is wired to, decoded with the device's own profile templates).
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SimulatedPeers: @unchecked Sendable {
    public let world: SimWorld
    let clock: MoireClock
    public internal(set) var camera: SimulatedU3VCamera?
    public private(set) var dmd: SimulatedDLPC900?
    /// What the DMD's mirrors show, on the bench.
    public private(set) var mirrors: SimulatedModulator?
    public private(set) var serial: [String: SimulatedSerialController] = [:]
    private var handlers: [String: [(String) -> Void]] = [:]
    private let lock = NSLock()

    init(world: SimWorld, clock: MoireClock) { self.world = world; self.clock = clock }

    deinit { for s in serial.values { s.stop() } }

    /// The DLPC900 peer for a modulator profile: shown entries map back to the profile's patterns
    /// (the all-on image to uniform illumination, anything else unknown to dark mirrors).
    /// `firesCamera`: its trigger out is wired to the camera's trigger input (the rig's leader is the modulator).
    func makeDMD(name: String, profile: ModulatorProfile, firesCamera: Bool) -> SimulatedDLPC900 {
        let d = SimulatedDLPC900()
        let m = SimulatedModulator(name: "\(name).mirrors", profile: profile, world: world, clock: clock)
        var byImage: [DMDImage: Int] = [:]
        for p in profile.patternSets.flatMap(\.patterns) { if let i = p.dmd { byImage[i] = p.index } }
        if let u = profile.uniformDMD { byImage[u] = -1 }
        d.onDisplay = { [weak m] e in
            guard let m else { return }
            if let e, let p = byImage[DMDImage(image: Int(e.imageIndex), bit: Int(e.bitPosition))] {
                try? m.show(pattern: p)
            } else {
                m.idle()
            }
        }
        if firesCamera { d.onTriggerOut = { [weak self] in self?.camera?.externalTrigger() } }
        dmd = d; mirrors = m
        return d
    }

    /// The controller peer on `port` (one per port name).
    func serialController(port: String) throws -> SimulatedSerialController {
        lock.lock(); defer { lock.unlock() }
        if let s = serial[port] { return s }
        let s = try SimulatedSerialController()
        serial[port] = s
        s.onLine = { [weak self] line in
            guard let self else { return }
            self.lock.lock(); let hs = self.handlers[port] ?? []; self.lock.unlock()
            for h in hs { h(line) }
        }
        return s
    }

    private func add(_ port: String, _ h: @escaping (String) -> Void) {
        lock.lock(); handlers[port, default: []].append(h); lock.unlock()
    }

    /// The value a matched line carries, in the device's unit (directly, or from DAC counts).
    private static func value(_ c: SerialCommand, _ cap: [String: Double], unit: String) -> Double? {
        cap[unit] ?? cap["counts"].flatMap { c.value(counts: $0) }
    }

    func wire(_ d: RigDevice, physics: SimulatedLaser) {
        guard let s = d.profile.serial, let port = d.profile.connection["port"] else { return }
        let fixed = s.values
        // set at the laser's own panel
        if s.commands["power"] == nil { try? physics.setPower(mW: physics.profile.maxPowerMw) }
        add(port) { line in
            if s.commands["on"]?.match(line, fixed: fixed) != nil { try? physics.setEnabled(true) }
            if s.commands["off"]?.match(line, fixed: fixed) != nil { try? physics.setEnabled(false) }
            if let c = s.commands["gate_on"], c.match(line, fixed: fixed) != nil { physics.setGate(true) }
            if let c = s.commands["gate_off"], c.match(line, fixed: fixed) != nil { physics.setGate(false) }
            if let c = s.commands["power"], let cap = c.match(line, fixed: fixed),
                let mw = Self.value(c, cap, unit: "mw")
            {
                try? physics.setPower(mW: min(max(0, mw), physics.profile.maxPowerMw))
            }
        }
    }

    /// A controller line wired to the camera's trigger input: its `high` command is a rising edge.
    func wireCameraTrigger(_ d: RigDevice) {
        guard let s = d.profile.serial, let port = d.profile.connection["port"], let high = s.commands["high"] else {
            return
        }
        add(port) { [weak self] line in
            if high.match(line, fixed: s.values) != nil { self?.camera?.externalTrigger() }
        }
    }

    func wire(_ d: RigDevice, physics: SimulatedScanner) {
        guard let s = d.profile.serial, let port = d.profile.connection["port"], let c = s.commands["set"] else {
            return
        }
        add(port) { line in
            if let cap = c.match(line, fixed: s.values), let v = Self.value(c, cap, unit: "volts") {
                try? physics.set(volts: v)
            }
        }
    }

    func wire(_ d: RigDevice, physics: SimulatedStage) {
        guard let s = d.profile.serial, let port = d.profile.connection["port"], let c = s.commands["move"] else {
            return
        }
        add(port) { line in
            if let cap = c.match(line, fixed: s.values), let v = Self.value(c, cap, unit: "um") {
                try? physics.move(toUm: v)
            }
        }
    }
}
