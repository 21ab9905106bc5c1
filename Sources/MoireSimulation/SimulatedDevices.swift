import Foundation
import MoireConfig
import MoireCore
import MoireHardware

/// A simulated laser: enable, power set-point and TTL gate; emits when enabled and gated.
public final class SimulatedLaser: Laser, @unchecked Sendable {  // state under `lock`
    public let name: String
    public let profile: LaserProfile
    private let world: SimWorld
    private let lock = NSLock()
    private var enabled = false, gate = true, power = 0.0

    public init(name: String, profile: LaserProfile, world: SimWorld) {
        self.name = name; self.profile = profile; self.world = world
        world.register(self)
    }

    public func setPower(mW: Double) throws {
        guard (0...profile.maxPowerMw).contains(mW) else {
            throw MoireError(.hardware, "power \(mW) mW outside 0…\(profile.maxPowerMw) mW", place: "laser \(name)")
        }
        lock.lock(); power = mW; lock.unlock()
        world.record("\(name).power \(mW)")
    }

    public func setEnabled(_ on: Bool) throws {
        lock.lock(); enabled = on; lock.unlock()
        world.record("\(name).\(on ? "on" : "off")")
    }

    public func setGate(_ high: Bool) { lock.lock(); gate = high; lock.unlock() }
    public var isEmitting: Bool { lock.lock(); defer { lock.unlock() }; return enabled && gate && power > 0 }
    public var isEnabled: Bool { lock.lock(); defer { lock.unlock() }; return enabled }
    public var powerMw: Double { lock.lock(); defer { lock.unlock() }; return power }

    public func safe() {
        lock.lock(); enabled = false; gate = false; lock.unlock()
        world.record("\(name).safe")
    }
}

/// A simulated z stage with a settle time.
public final class SimulatedStage: Stage, @unchecked Sendable {  // z under `lock`
    public let name: String
    public let profile: StageProfile
    private let world: SimWorld
    private let clock: MoireClock
    private let lock = NSLock()
    private var z: Double

    public init(name: String, profile: StageProfile, world: SimWorld, clock: MoireClock) {
        self.name = name; self.profile = profile; self.world = world; self.clock = clock
        z = profile.homeUm
        world.register(self)
    }

    public func move(toUm target: Double) throws {
        guard profile.rangeUm.contains(target) else {
            throw MoireError(.hardware, "z \(target) µm outside \(profile.rangeUm)", place: "stage \(name)")
        }
        lock.lock(); z = target; lock.unlock()
        world.record("\(name).move \(target)")
        clock.sleep(ns: Int64(profile.settleMs * 1e6))
    }

    public var positionUm: Double { lock.lock(); defer { lock.unlock() }; return z }
    public func park() { lock.lock(); z = profile.homeUm; lock.unlock(); world.record("\(name).park") }
}

/// A simulated galvo.
public final class SimulatedScanner: MoireHardware.Scanner, @unchecked Sendable {  // volts under `lock`
    public let name: String
    public let profile: ScannerProfile
    private let world: SimWorld
    private let lock = NSLock()
    private var v: Double

    public init(name: String, profile: ScannerProfile, world: SimWorld) {
        self.name = name; self.profile = profile; self.world = world
        v = profile.parkV
        world.register(self)
    }

    public func set(volts: Double) throws {
        guard profile.rangeV.contains(volts) else {
            throw MoireError(.hardware, "\(volts) V outside \(profile.rangeV)", place: "scanner \(name)")
        }
        lock.lock(); v = volts; lock.unlock()
        world.record("\(name).set \(volts)")
    }

    public var volts: Double { lock.lock(); defer { lock.unlock() }; return v }
    public func park() { lock.lock(); v = profile.parkV; lock.unlock(); world.record("\(name).park") }
    public var isParked: Bool { volts == profile.parkV }
}

/// How the patterns a simulated modulator really projects differ from the nominal ones of its profile
/// (a real SLM's calibration is never exact): wave vector scaled and rotated, phases offset.
public struct PatternError: Sendable, Equatable {
    public var kScale: Double
    public var rotationDeg: Double
    public var phaseOffsetRad: Double
    public init(kScale: Double = 1, rotationDeg: Double = 0, phaseOffsetRad: Double = 0) {
        self.kScale = kScale; self.rotationDeg = rotationDeg; self.phaseOffsetRad = phaseOffsetRad
    }

    /// The pattern actually projected for a nominal one.
    public func apply(_ p: PatternSpec) -> PatternSpec {
        let th = rotationDeg * .pi / 180
        var q = p
        q.kx = kScale * (p.kx * cos(th) - p.ky * sin(th))
        q.ky = kScale * (p.kx * sin(th) + p.ky * cos(th))
        q.phaseRad = p.phaseRad + phaseOffsetRad
        return q
    }
}

/// A simulated SLM/DMD: shows patterns from its profile, runs uploaded sequences, triggers the camera.
///
/// What it projects is the profile's pattern with `patternError` applied (from the profile's
/// `driver_options` `k_scale`, `rotation_deg`, `phase_offset_rad`, or set by a test).
public final class SimulatedModulator: Modulator, @unchecked Sendable {  // state under `lock`
    public let name: String
    public let profile: ModulatorProfile
    private let world: SimWorld
    private let clock: MoireClock
    /// Guards the state below; its waits run on the modulator's clock.
    private let lock: ClockCondition
    private var shown = -1
    private var active = false
    private var sequence: [SequenceStep] = []
    private var running = false
    private var cancel = false
    private var failure: MoireError?
    private let specs: [Int: PatternSpec]
    private var error = PatternError()

    /// The deviation of the projected patterns from the nominal ones.
    public var patternError: PatternError {
        get { lock.lock(); defer { lock.unlock() }; return error }
        set { lock.lock(); error = newValue; lock.unlock() }
    }

    /// The pattern really projected for pattern `index` (the simulator's ground truth).
    public func projected(_ index: Int) -> PatternSpec? { specs[index].map { patternError.apply($0) } }

    public init(name: String, profile: ModulatorProfile, world: SimWorld, clock: MoireClock) {
        self.name = name; self.profile = profile; self.world = world; self.clock = clock
        lock = clock.makeCondition()
        var s: [Int: PatternSpec] = [:]
        for set in profile.patternSets { for p in set.patterns { s[p.index] = p } }
        specs = s
        world.register(self)
    }

    /// The pattern on display and its nominal parameters (nil spec: uniform, or nothing when idle).
    var current: (Int, PatternSpec?) {
        lock.lock(); defer { lock.unlock() }
        return active ? (shown, specs[shown].map { error.apply($0) }) : (-2, nil)
    }

    public func show(pattern: Int) throws {
        guard pattern == -1 || specs[pattern] != nil else {
            throw MoireError(
                .hardware, "pattern \(pattern) is not in the modulator's pattern table", place: "modulator \(name)")
        }
        lock.lock(); shown = pattern; active = true; lock.unlock()
        world.record("\(name).show \(pattern)")
        clock.sleep(ns: Int64(profile.settleMs * 1e6))
    }

    public func upload(_ steps: [SequenceStep]) throws {
        guard steps.count <= profile.sequenceMax else {
            throw MoireError(
                .hardware, "sequence of \(steps.count) steps exceeds the maximum \(profile.sequenceMax)",
                place: "modulator \(name)")
        }
        for s in steps where s.pattern != -1 && specs[s.pattern] == nil {
            throw MoireError(
                .hardware, "pattern \(s.pattern) is not in the modulator's pattern table", place: "modulator \(name)")
        }
        lock.lock(); sequence = steps; lock.unlock()
        world.record("\(name).upload \(steps.map(\.pattern))")
    }

    public func startSequence(camera: Camera, lasers: [String: Laser]) throws {
        lock.lock()
        guard !running else {
            lock.unlock(); throw MoireError(.state, "a sequence is already running", place: "modulator \(name)")
        }
        running = true; cancel = false; failure = nil
        let steps = sequence
        lock.unlock()
        world.record("\(name).start")
        clock.startThread(name: "moire.sim.modulator") { [self] in
            defer { lock.lock(); running = false; lock.broadcast(); lock.unlock() }
            for step in steps {
                lock.lock()
                if cancel { lock.unlock(); return }
                shown = step.pattern; active = true
                lock.unlock()
                clock.sleep(ns: Int64(profile.settleMs * 1e6))
                let laser = step.laser.flatMap { lasers[$0] }
                laser?.setGate(true)
                do { try camera.trigger() } catch {
                    laser?.setGate(false)
                    lock.lock(); failure = (error as? MoireError) ?? MoireError(.hardware, "\(error)"); lock.unlock()
                    return
                }
                clock.sleep(ns: Int64(step.exposureMs * 1e6))
                laser?.setGate(false)
                clock.sleep(ns: Int64(step.readoutMs * 1e6))
            }
        }
    }

    public func waitSequence(timeoutMs: Int) throws -> Bool {
        let deadline = clock.deadline(afterMs: Double(timeoutMs))
        lock.lock(); defer { lock.unlock() }
        while running { if !lock.wait(untilNs: deadline) { return false } }
        if let failure { throw failure }
        return true
    }

    public func idle() {
        lock.lock(); cancel = true; active = false; shown = -1
        // The sequence ends at its next step; half a second of the modulator's time at most.
        let deadline = clock.deadline(afterMs: 500)
        while running { if !lock.wait(untilNs: deadline) { break } }
        lock.unlock()
        world.record("\(name).idle")
    }

    public var isIdle: Bool { lock.lock(); defer { lock.unlock() }; return !active && !running }
}
