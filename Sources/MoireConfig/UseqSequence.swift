import Foundation
import MoireCore

/// The time, z and channel parts of an acquisition written as a useq-schema `MDASequence`
/// (pymmcore-plus's multi-dimensional acquisition schema), YAML or JSON. A protocol names it with
/// `sequence: FILE`; the protocol keeps what useq cannot say (rig, mode, SIM or light-sheet block,
/// each channel's laser, power and pattern set), the sequence picks the channels by name
/// (`config`), their exposures, the time points and the z stack. What Moiré cannot acquire (several
/// stage positions, grids, autofocus, an axis order other than time, channel, z) is refused at its
/// place in the sequence file.
public struct UseqSequence: Sendable, Equatable {
    public struct Channel: Sendable, Equatable {
        public var config: String
        public var exposureMs: Double?
        /// Where it is written (errors about the channel point here).
        public var place: String
    }

    /// How the z positions are given (µm).
    public enum ZPlan: Sendable, Equatable {
        /// `range` centred on the current (home) position.
        case range(Double, step: Double, goUp: Bool)
        /// `top` and `bottom`, absolute.
        case topBottom(top: Double, bottom: Double, step: Double, goUp: Bool)
        /// `above` and `below` the current (home) position.
        case aboveBelow(above: Double, below: Double, step: Double, goUp: Bool)
    }

    public var timepoints: Int?
    public var intervalMs: Double?
    public var z: ZPlan?
    public var zPlace: String?
    public var channels: [Channel] = []
    public var file: String

    /// Reads the sequence file (through the config reader: sizes, encodings and duplicate keys are
    /// checked as for protocols).
    public static func load(file: String) throws -> UseqSequence {
        try parse(ConfigNode.load(file: file))
    }

    static func parse(_ root: ConfigNode) throws -> UseqSequence {
        var sequence = UseqSequence(file: root.file)
        if let tn = try root.child("time_plan") {
            sequence.timepoints = try tn.required("loops").int(in: 1...10_000_000)
            let intervalNode = try tn.required("interval")
            sequence.intervalMs = try Self.seconds(intervalNode) * 1000
            guard (0...86_400_000).contains(sequence.intervalMs!) else {
                throw intervalNode.error("interval must be 0…86400 s")
            }
            _ = try tn.child("prioritize_duration")
            try tn.finish()
        }
        if let zn = try root.child("z_plan") {
            sequence.zPlace = zn.place
            let step = try zn.required("step").double(in: 0.001...1000, unit: " µm")
            let goUp = try zn.optionalBool("go_up") ?? true
            if let rangeNode = try zn.child("range") {
                sequence.z = .range(try rangeNode.double(in: 0...10_000, unit: " µm"), step: step, goUp: goUp)
            } else if let topNode = try zn.child("top") {
                let top = try topNode.double()
                let bottom = try zn.required("bottom").double()
                guard top >= bottom else { throw topNode.error("top (\(top) µm) is below bottom (\(bottom) µm)") }
                sequence.z = .topBottom(top: top, bottom: bottom, step: step, goUp: goUp)
            } else if let aboveNode = try zn.child("above") {
                sequence.z = .aboveBelow(
                    above: try aboveNode.double(in: 0...10_000, unit: " µm"),
                    below: try zn.required("below").double(in: 0...10_000, unit: " µm"), step: step, goUp: goUp)
            } else {
                throw zn.error(
                    "Moiré reads z plans given by range and step, top, bottom and step, or above, below and step")
            }
            try zn.finish()
        }
        if let cn = try root.child("channels") {
            for node in try cn.list() {
                var channel = Channel(config: "", exposureMs: nil, place: node.place)
                if case .some = try? node.string() {
                    channel.config = try node.string()
                } else {
                    channel.config = try node.required("config").string()
                    channel.exposureMs = try node.optionalDouble("exposure", in: 0.001...3_600_000, unit: " ms")
                    _ = try node.child("group")
                    if let every = try node.child("acquire_every"), try every.int() != 1 {
                        throw every.error("Moiré acquires every channel at every time point")
                    }
                    if let stack = try node.child("do_stack"), try !stack.bool() {
                        throw stack.error("Moiré acquires every channel's z stack")
                    }
                    if let offset = try node.child("z_offset"), try offset.double() != 0 {
                        throw offset.error("per-channel z offsets are not supported")
                    }
                    try node.finish()
                }
                sequence.channels.append(channel)
            }
        }
        if let positions = try root.child("stage_positions"), !(try positions.list()).isEmpty {
            throw positions.error("Moiré acquires at one stage position; give none (the stage's z comes from z_plan)")
        }
        for unsupported in ["grid_plan", "autofocus_plan"] {
            if let node = try root.child(unsupported) { throw node.error("\(unsupported) is not supported by Moiré") }
        }
        if let orderNode = try root.child("axis_order") {
            let axes: [String]
            if let text = try? orderNode.string() {
                axes = text.map(String.init)
            } else {
                axes = try orderNode.strings()
            }
            let acquired = axes.filter { $0 == "t" || $0 == "c" || $0 == "z" }
            guard acquired == ["t", "c", "z"] else {
                throw orderNode.error(
                    "Moiré acquires time, then channel, then z (axis_order tpcz); found \(axes.joined())")
            }
        }
        _ = try root.child("metadata")
        _ = try root.child("keep_shutter_open_across")
        _ = try root.child("uid")
        try root.finish()
        return sequence
    }

    /// A useq duration: seconds as a number, or `[-][D day[s], ]H:MM:SS[.fff]`.
    static func seconds(_ node: ConfigNode) throws -> Double {
        if let value = try? node.double() { return value }
        let text = try node.string()
        var days = 0.0
        var clock = Substring(text)
        if let comma = text.firstIndex(of: ",") {
            days = Double(text[..<comma].split(separator: " ").first ?? "") ?? .nan
            clock = text[text.index(after: comma)...].drop { $0 == " " }
        }
        let fields = clock.split(separator: ":").map { Double($0) }
        guard fields.count == 3, let hours = fields[0], let minutes = fields[1], let seconds = fields[2], !days.isNaN
        else { throw node.error("expected seconds or H:MM:SS; found '\(text.prefix(40))'") }
        return days * 86_400 + hours * 3600 + minutes * 60 + seconds
    }

    /// The stack as planes, first position and step (µm) for a stage whose current position is `home`.
    public func zStack(home: Double) -> (planes: Int, startUm: Double, stepUm: Double)? {
        guard let z else { return nil }
        let (low, high, step, goUp): (Double, Double, Double, Bool)
        switch z {
        case .range(let range, let s, let up): (low, high, step, goUp) = (home - range / 2, home + range / 2, s, up)
        case .topBottom(let top, let bottom, let s, let up): (low, high, step, goUp) = (bottom, top, s, up)
        case .aboveBelow(let above, let below, let s, let up):
            (low, high, step, goUp) = (home - below, home + above, s, up)
        }
        let planes = Int(((high - low) / step).rounded()) + 1
        return goUp ? (planes, low, step) : (planes, high, -step)
    }

    /// A protocol's time, z and channels as a useq MDASequence (YAML), with the SIM geometry in
    /// `metadata` for whoever reads it back.
    public static func export(_ p: AcquisitionProtocol) -> String {
        var lines: [String] = []
        lines.append("axis_order: tpcz")
        lines.append("channels:")
        for channel in p.channels {
            lines.append("- config: \(yamlString(channel.name))")
            lines.append("  exposure: \(channel.exposureMs)")
        }
        if p.timepoints > 1 || p.intervalMs > 0 {
            lines.append("time_plan:")
            lines.append("  interval: \(p.intervalMs / 1000)")
            lines.append("  loops: \(p.timepoints)")
        }
        if p.hasZ {
            let last = p.zStartUm + Double(p.zPlanes - 1) * p.zStepUm
            lines.append("z_plan:")
            lines.append("  top: \(max(p.zStartUm, last))")
            lines.append("  bottom: \(min(p.zStartUm, last))")
            lines.append("  step: \(p.zPlanes > 1 ? abs(p.zStepUm) : 1)")
            lines.append("  go_up: \(p.zStepUm >= 0)")
        }
        lines.append("metadata:")
        lines.append("  moire:")
        lines.append("    protocol: \(yamlString(p.file))")
        lines.append("    mode: \(p.mode.rawValue)")
        lines.append("    angles: \(p.angles)")
        lines.append("    phases: \(p.phases)")
        return lines.joined(separator: "\n") + "\n"
    }

    static func yamlString(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
}
