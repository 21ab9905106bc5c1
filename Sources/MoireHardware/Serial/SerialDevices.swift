import Foundation
import MoireConfig
import MoireCore

/// One serial controller (a TriggerScope- or Tiger-style box) shared by the devices wired to it:
/// one command at a time, each line built from a profile's template and its reply checked.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SerialController: @unchecked Sendable {
    public let port: SerialPort
    let channel: SerialLineChannel
    private let lock = NSLock()

    /// Opens `path` with the profile's framing; checks the identification reply when the profile has one.
    public init(path: String, profile: SerialProfile) throws {
        port = try SerialPort(path: path, baud: profile.baud)
        channel = SerialLineChannel(port: port, terminator: profile.terminator, timeoutMs: profile.timeoutMs)
        if let id = profile.identify { try run(id, values: profile.values, place: "identify") }
    }

    /// Sends a command; with an expected reply, waits for it and checks it.
    @discardableResult
    public func run(_ command: SerialCommand, values: [String: String], place: String) throws -> String? {
        let line = SerialCommand.fill(command.send, values)
        lock.lock(); defer { lock.unlock() }
        guard let expected = command.reply.map({ SerialCommand.fill($0, values) }) else {
            try channel.send(line)
            return nil
        }
        let reply = try channel.query(line)
        guard SerialCommand.replyMatches(reply, expected: expected) else {
            throw MoireError(
                .hardware, "unexpected reply '\(reply.prefix(80))' to '\(line)'; expected '\(expected)'",
                place: "\(port.path): \(place)")
        }
        return reply
    }
}

/// The values of one call: the device's fixed values, the physical value under its unit name, and
/// the DAC counts when the command maps them.
func serialValues(
    _ profile: SerialProfile, _ command: SerialCommand, unit: String, value: Double, extra: [String: String] = [:]
) -> [String: String] {
    var v = profile.values.merging(extra) { $1 }
    v[unit] = String(format: "%.4f", value)
    if let c = command.counts(value) { v["counts"] = String(c) }
    return v
}

/// A device on a serial controller, by its profile's command templates.
// Sendable by hand: immutable; exchanges go through SerialController's `lock`.
public class SerialDevice: @unchecked Sendable {
    public let name: String
    let serial: SerialProfile
    let controller: SerialController
    let place: String

    init(name: String, kind: DeviceKind, serial: SerialProfile, controller: SerialController) {
        self.name = name; self.serial = serial; self.controller = controller; place = "\(kind.rawValue) \(name)"
    }

    func command(_ key: String) throws -> SerialCommand {
        guard let c = serial.commands[key] else {
            throw MoireError(.unsupported, "the profile has no '\(key)' command", place: place)
        }
        return c
    }

    func run(_ key: String, unit: String = "value", value: Double = 0, extra: [String: String] = [:]) throws {
        let c = try command(key)
        do {
            try controller.run(
                c, values: serialValues(serial, c, unit: unit, value: value, extra: extra), place: "\(place) \(key)")
        } catch let e as MoireError {
            throw MoireError(e.kind, e.message, place: e.place ?? place)
        }
    }

    /// Commands an analog position (`set` volts, `move` µm) within its range, then waits for it to settle.
    func drive(_ key: String, unit: String, to value: Double, within range: ClosedRange<Double>, settleMs: Double)
        throws
    {
        try check(value, unit: unit, within: range)
        try run(key, unit: unit, value: value)
        Thread.sleep(forTimeInterval: settleMs / 1000)
    }

    /// An analog value outside the device's range is refused before anything is sent.
    func check(_ value: Double, unit: String, within range: ClosedRange<Double>) throws {
        guard range.contains(value) else {
            let symbol = ["volts": "V", "um": "µm"][unit] ?? unit
            throw MoireError(
                .hardware, "\(value) \(symbol) outside \(range.lowerBound)…\(range.upperBound) \(symbol)", place: place)
        }
    }

    /// Loads a table of values (each within `range`) the controller steps through on its own, one
    /// per trigger pulse (`waveform_point` per value, then `waveform_arm`), where it stores sequences.
    public func loadWaveform(_ values: [Double], unit: String, within range: ClosedRange<Double>) throws {
        guard serial.commands["waveform_point"] != nil, serial.commands["waveform_arm"] != nil else {
            throw MoireError(
                .unsupported, "this controller profile has no waveform commands (waveform_point, waveform_arm)",
                place: place)
        }
        for v in values { try check(v, unit: unit, within: range) }
        for (i, v) in values.enumerated() {
            try run("waveform_point", unit: unit, value: v, extra: ["index": String(i)])
        }
        try run("waveform_arm", extra: ["count": String(values.count)])
    }

    /// Disarms the stored table (`waveform_arm` with a count of 0). Never throws.
    public func disarmTable() { try? run("waveform_arm", extra: ["count": "0"]) }
}

/// A galvo on a serial controller's analog output (`set` with {volts} or {counts}).
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SerialScanner: SerialDevice, Scanner, PositionTable, @unchecked Sendable {
    public let profile: ScannerProfile
    private let lock = NSLock()
    private var v: Double

    public init(name: String, profile: ScannerProfile, serial: SerialProfile, controller: SerialController) {
        self.profile = profile; v = profile.parkV
        super.init(name: name, kind: .scanner, serial: serial, controller: controller)
    }

    public func set(volts: Double) throws {
        try drive("set", unit: "volts", to: volts, within: profile.rangeV, settleMs: profile.settleMs)
        lock.lock(); v = volts; lock.unlock()
    }

    /// Volts stepped through per trigger pulse (analog waveform), where the controller supports it.
    public func loadWaveform(volts: [Double]) throws { try loadWaveform(volts, unit: "volts", within: profile.rangeV) }

    public func loadTable(_ positions: [Double]) throws { try loadWaveform(volts: positions) }

    public var volts: Double { lock.lock(); defer { lock.unlock() }; return v }
    public func park() { try? set(volts: profile.parkV) }
    public var isParked: Bool { volts == profile.parkV }
}

/// A piezo or stage on a serial controller (`move` with {um} or {counts}).
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SerialStage: SerialDevice, Stage, PositionTable, @unchecked Sendable {
    public let profile: StageProfile
    private let lock = NSLock()
    private var z: Double

    public init(name: String, profile: StageProfile, serial: SerialProfile, controller: SerialController) {
        self.profile = profile; z = profile.homeUm
        super.init(name: name, kind: .stage, serial: serial, controller: controller)
    }

    public func move(toUm target: Double) throws {
        try drive("move", unit: "um", to: target, within: profile.rangeUm, settleMs: profile.settleMs)
        lock.lock(); z = target; lock.unlock()
    }

    /// Positions (µm) stepped through per trigger pulse.
    public func loadTable(_ positions: [Double]) throws {
        try loadWaveform(positions, unit: "um", within: profile.rangeUm)
    }

    public var positionUm: Double { lock.lock(); defer { lock.unlock() }; return z }
    public func park() { try? move(toUm: profile.homeUm) }
}

/// A laser switched by a serial controller's TTL line (`on`/`off`), its power by an analog line
/// (`power` with {mw} or {counts}) when the profile has one, and its fast gate (`gate_on`/`gate_off`)
/// when wired; without a gate command the laser emits whenever it is on.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SerialLaser: SerialDevice, Laser, @unchecked Sendable {
    public let profile: LaserProfile
    private let lock = NSLock()
    private var enabled = false, gate = true, power = 0.0

    public init(name: String, profile: LaserProfile, serial: SerialProfile, controller: SerialController) {
        self.profile = profile
        super.init(name: name, kind: .laser, serial: serial, controller: controller)
    }

    public func setPower(mW: Double) throws {
        guard (0...profile.maxPowerMw).contains(mW) else {
            throw MoireError(.hardware, "power \(mW) mW outside 0…\(profile.maxPowerMw) mW", place: place)
        }
        if serial.commands["power"] != nil { try run("power", unit: "mw", value: mW) }
        lock.lock(); power = mW; lock.unlock()
    }

    public func setEnabled(_ on: Bool) throws {
        try run(on ? "on" : "off")
        lock.lock(); enabled = on; lock.unlock()
    }

    public func setGate(_ high: Bool) {
        guard serial.commands["gate_on"] != nil else { return }
        if (try? run(high ? "gate_on" : "gate_off")) != nil { lock.lock(); gate = high; lock.unlock() }
    }

    public var isEmitting: Bool { lock.lock(); defer { lock.unlock() }; return enabled && gate && power > 0 }
    public var isEnabled: Bool { lock.lock(); defer { lock.unlock() }; return enabled }
    public var powerMw: Double { lock.lock(); defer { lock.unlock() }; return power }

    /// Commands the laser off (and its gate low); the state is off whatever the reply.
    public func safe() {
        try? run("off")
        let gated = serial.commands["gate_off"] != nil
        if gated { try? run("gate_off") }
        lock.lock(); enabled = false; if gated { gate = false }; lock.unlock()
    }
}

/// A controller's digital line wired to the camera's trigger input (`high`, `low`): a pulse is high then low.
// Sendable by hand: no state of its own; its exchanges go through SerialController's lock.
public final class SerialTriggerLine: SerialDevice, TriggerLine, @unchecked Sendable {
    public init(name: String, serial: SerialProfile, controller: SerialController) {
        super.init(name: name, kind: .trigger, serial: serial, controller: controller)
    }

    public func pulse() throws {
        try run("high")
        try run("low")
    }

    public func safe() { try? run("low") }
}
