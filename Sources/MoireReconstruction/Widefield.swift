import MoireCore

/// Widefield image of a SIM phase set: the mean of its raw phases (the reference every SR frame is compared with).
public enum Widefield {
    /// Mean of `planes` (equal sizes) as floats.
    public static func mean(_ planes: [[Float]]) throws -> [Float] {
        guard let first = planes.first else { throw MoireError(.usage, "no planes to average") }
        guard planes.allSatisfy({ $0.count == first.count }) else { throw MoireError(.usage, "planes differ in size") }
        var out = [Float](repeating: 0, count: first.count)
        for p in planes { for i in 0..<p.count { out[i] += p[i] } }
        let s = 1 / Float(planes.count)
        for i in 0..<out.count { out[i] *= s }
        return out
    }
}
