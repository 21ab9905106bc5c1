import MoireConfig
import MoireCore

/// One planned exposure.
public struct AcquisitionEvent: Sendable, Equatable {
    public var index: Int
    public var t: Int
    public var c: Int
    public var z: Int
    public var angle: Int
    public var phase: Int
    public var channel: String
    public var laser: String
    public var powerMw: Double
    public var exposureMs: Double
    /// Modulator pattern (−1: uniform illumination).
    public var pattern: Int
    public var zUm: Double
}

/// A protocol expanded into exposures: time × channel × z × angle × phase (phase fastest).
///
/// Events come in groups of one (t, channel, z): the unit a modulator sequence covers.
public struct EventPlan: Sendable {
    public var events: [AcquisitionEvent]
    public var groupSize: Int
    public var timepoints: Int

    public init(_ p: AcquisitionProtocol) {
        var events: [AcquisitionEvent] = []
        let sets = p.rig.modulator?.profile.modulator
        for t in 0..<p.timepoints {
            for (c, ch) in p.channels.enumerated() {
                let set = ch.patternSet.flatMap { sets?.patternSet(named: $0) }
                for z in 0..<p.zPlanes {
                    for a in 0..<p.angles {
                        for ph in 0..<p.phases {
                            let pattern = set?.pattern(angle: a, phase: ph)?.index ?? -1
                            events.append(
                                AcquisitionEvent(
                                    index: events.count, t: t, c: c, z: z, angle: a, phase: ph,
                                    channel: ch.name, laser: ch.laser, powerMw: ch.powerMw,
                                    exposureMs: ch.exposureMs, pattern: pattern,
                                    zUm: p.zStartUm + Double(z) * p.zStepUm))
                        }
                    }
                }
            }
        }
        self.events = events
        groupSize = p.angles * p.phases
        timepoints = p.timepoints
    }

    /// Events split into (t, channel, z) groups.
    public var groups: [ArraySlice<AcquisitionEvent>] {
        stride(from: 0, to: events.count, by: groupSize).map { events[$0..<min($0 + groupSize, events.count)] }
    }
}
