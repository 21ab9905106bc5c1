import Foundation
import MoireCore

/// One command of a serial (ASCII line) controller, as a profile writes it: the line to send and
/// the reply to expect, with `{name}` placeholders filled from the device's values (`line`, …) and
/// the call's value (`counts`, `volts`, `um`, `mw`, `index`, `count`). `counts` is the call's
/// physical value mapped linearly from `from` to `to` and rounded (a DAC code).
public struct SerialCommand: Sendable, Equatable {
    public var send: String
    /// Expected reply; nil: no reply is awaited. A trailing `*` matches any rest.
    public var reply: String?
    /// Physical range and its DAC counts, for `{counts}`.
    public var from: ClosedRange<Double>?
    public var to: ClosedRange<Double>?

    public init(send: String, reply: String?, from: ClosedRange<Double>? = nil, to: ClosedRange<Double>? = nil) {
        self.send = send; self.reply = reply; self.from = from; self.to = to
    }

    /// Counts for a physical value (clamped to the range).
    public func counts(_ value: Double) -> Int? {
        guard let from, let to else { return nil }
        let f =
            (min(max(value, from.lowerBound), from.upperBound) - from.lowerBound) / (from.upperBound - from.lowerBound)
        return Int((to.lowerBound + f * (to.upperBound - to.lowerBound)).rounded())
    }

    /// The physical value for counts (inverse of `counts`).
    public func value(counts c: Double) -> Double? {
        guard let from, let to else { return nil }
        return from.lowerBound + (c - to.lowerBound) / (to.upperBound - to.lowerBound)
            * (from.upperBound - from.lowerBound)
    }

    /// Fills `{name}` placeholders.
    public static func fill(_ template: String, _ values: [String: String]) -> String {
        var out = template
        for (k, v) in values { out = out.replacingOccurrences(of: "{\(k)}", with: v) }
        return out
    }

    /// Whether `line` is this command's `send` line with `fixed` values; returns the values of the
    /// remaining numeric placeholders, or nil when it does not match.
    public func match(_ line: String, fixed: [String: String]) -> [String: Double]? {
        let t = Self.fill(send, fixed)
        var captured: [String: Double] = [:]
        var ti = t.startIndex
        var li = line.startIndex
        while ti < t.endIndex {
            if t[ti] == "{", let close = t[ti...].firstIndex(of: "}") {
                let name = String(t[t.index(after: ti)..<close])
                var end = li
                while end < line.endIndex, line[end].isNumber || line[end] == "-" || line[end] == "." {
                    end = line.index(after: end)
                }
                guard end > li, let v = Double(line[li..<end]) else { return nil }
                captured[name] = v
                li = end; ti = t.index(after: close)
                continue
            }
            guard li < line.endIndex, line[li] == t[ti] else { return nil }
            li = line.index(after: li); ti = t.index(after: ti)
        }
        return li == line.endIndex ? captured : nil
    }

    /// Whether `reply` is the expected one (after filling).
    public static func replyMatches(_ reply: String, expected: String) -> Bool {
        expected.hasSuffix("*") ? reply.hasPrefix(expected.dropLast()) : reply == expected
    }
}

/// A device on a serial controller: how to talk to the controller, the device's own values (its
/// lines), and its commands by role (`set` for a scanner, `move` for a stage, `on`/`off`/`power` for
/// a laser; `waveform_point` and `waveform_arm` where the controller stores sequences).
public struct SerialProfile: Sendable, Equatable {
    public var baud: Int
    public var terminator: UInt8
    public var timeoutMs: Int
    /// Identification query and the reply prefix that proves the right controller answers.
    public var identify: SerialCommand?
    public var values: [String: String]
    public var commands: [String: SerialCommand]

    /// Commands each role needs.
    public static func required(for kind: DeviceKind) -> [String] {
        switch kind {
        case .scanner: return ["set"]
        case .stage: return ["move"]
        case .laser: return ["on", "off"]
        case .trigger: return ["high", "low"]
        case .camera, .modulator: return []
        }
    }

    static func parse(_ node: ConfigNode, kind: DeviceKind) throws -> SerialProfile {
        let baud = try node.optionalInt("baud", in: 300...4_000_000) ?? 115_200
        var term: UInt8 = 0x0A
        if let tn = try node.child("terminator") {
            switch try tn.string() {
            case "\n", "lf", "LF": term = 0x0A
            case "\r", "cr", "CR": term = 0x0D
            default: throw tn.error("terminator must be lf or cr")
            }
        }
        let timeout = try node.optionalInt("timeout_ms", in: 1...60_000) ?? 500
        let values = try node.child("values")?.stringMap() ?? [:]
        func command(_ c: ConfigNode) throws -> SerialCommand {
            let send = try c.required("send").string()
            guard !send.isEmpty, !send.contains("\n"), !send.contains("\r") else {
                throw c.error("send must be one non-empty line")
            }
            let reply = try c.optionalString("reply")
            var from: ClosedRange<Double>?
            var to: ClosedRange<Double>?
            if let fn = try c.child("from") {
                let v = try fn.doubles(count: 2)
                guard v[0] < v[1] else { throw fn.error("from must be [low, high] with low < high") }
                from = v[0]...v[1]
                let tn = try c.required("to")
                let w = try tn.doubles(count: 2)
                guard w[0] != w[1] else { throw tn.error("to must span a range of counts") }
                to = min(w[0], w[1])...max(w[0], w[1])
                if w[0] > w[1] { throw tn.error("to must be [low, high] counts (an inverted DAC is a reversed from)") }
            } else if try c.child("to") != nil {
                throw c.error("to needs from")
            }
            if send.contains("{counts}") && from == nil {
                throw c.error("send uses {counts} but the command has no from/to mapping")
            }
            try c.finish()
            return SerialCommand(send: send, reply: reply, from: from, to: to)
        }
        let identify = try node.child("identify").map(command)
        var commands: [String: SerialCommand] = [:]
        let cn = try node.required("commands")
        for name in try cn.keys() { commands[name] = try command(cn.required(name)) }
        let missing = SerialProfile.required(for: kind).filter { commands[$0] == nil }
        guard missing.isEmpty else {
            throw cn.error(
                "a \(kind.rawValue) on a serial controller needs the commands \(missing.joined(separator: ", "))")
        }
        try node.finish()
        return SerialProfile(
            baud: baud, terminator: term, timeoutMs: timeout, identify: identify, values: values, commands: commands)
    }
}
