import Foundation
import MoireConfig
import MoireCore

/// What is known of one pattern orientation before estimation: the nominal pattern of the modulator profile.
public struct PatternPrior: Codable, Sendable, Equatable {
    /// Wave vector, cycles/µm.
    public var kx: Double
    public var ky: Double
    /// Phase of each frame of this orientation, rad.
    public var phases: [Double]
    public var modulation: Double

    public init(kx: Double, ky: Double, phases: [Double], modulation: Double) {
        self.kx = kx; self.ky = ky; self.phases = phases; self.modulation = modulation
    }

    /// The priors of a modulator pattern set, one per angle (phases in frame order).
    public static func from(_ set: PatternSet, angles: Int, phases: Int) -> [PatternPrior] {
        (0..<angles).map { a in
            let ps = (0..<phases).compactMap { set.pattern(angle: a, phase: $0) }
            let first = ps.first!
            return PatternPrior(
                kx: first.kx, ky: first.ky, phases: ps.map(\.phaseRad),
                modulation: ps.map(\.modulation).reduce(0, +) / Double(ps.count))
        }
    }

    /// Three (or n) orientations 180°/n apart with equidistant phases, from a period and the first angle.
    public static func regular(
        periodUm: Double, firstAngleDeg: Double, angles: Int, phases: Int, modulation: Double = 0.7
    ) -> [PatternPrior] {
        (0..<angles).map { a in
            let th = (firstAngleDeg + Double(a) * 180 / Double(angles)) * .pi / 180
            return PatternPrior(
                kx: cos(th) / periodUm, ky: sin(th) / periodUm,
                phases: (0..<phases).map { 2 * .pi * Double($0) / Double(phases) }, modulation: modulation)
        }
    }
}

/// The parameters used for one orientation, with where they came from and how far to trust them.
public struct SIMAngleParameters: Codable, Sendable, Equatable {
    public var kx: Double
    public var ky: Double
    /// Absolute phase of each frame's pattern (rad), in the image's own coordinates (origin at pixel 0,0).
    public var phases: [Double]
    public var modulation: Double
    /// Correlation peak over its surroundings (≥ the trust threshold for an estimate to be used).
    public var confidence: Double
    /// `estimated`, `prior` (fallback or no estimation), or `fixed` (given by the caller).
    public var source: String
    /// True when the estimate was not trustworthy and the prior was used instead.
    public var flagged: Bool
    public var reason: String?
    /// How band 0 leaks into band +1 around its raw-spectrum origin, measured at estimation (nil: not measured).
    public var orderLeak: OrderLeak?
    /// How well band +1, separated with these phases and moved by k, agrees with band 0 where the
    /// OTF passes both: |ρ|² of their normalised correlation (1: they match; nil: not measured).
    public var bandAgreement: Double?

    public init(
        kx: Double, ky: Double, phases: [Double], modulation: Double, confidence: Double, source: String,
        flagged: Bool, reason: String? = nil
    ) {
        self.kx = kx; self.ky = ky; self.phases = phases; self.modulation = modulation
        self.confidence = confidence; self.source = source; self.flagged = flagged; self.reason = reason
    }

    public var kMagnitude: Double { (kx * kx + ky * ky).squareRoot() }
    /// Orientation of the wave vector in degrees, folded into [0, 180).
    public var angleDeg: Double {
        var a = atan2(ky, kx) * 180 / .pi
        while a < 0 { a += 180 }
        while a >= 180 { a -= 180 }
        return a
    }
}

/// The attenuation of band +1, ring by ring around its raw-spectrum origin: where the measured
/// power is several times what the in-focus signal explains (band 0 leaking in), the ring is
/// brought down to what the signal explains; 1 elsewhere.
public struct OrderLeak: Codable, Sendable, Equatable {
    /// Ring width, cycles/µm (ring r is centred r·step from the origin).
    public var ringStep: Double
    public var attenuation: [Double]

    public init(ringStep: Double, attenuation: [Double]) {
        self.ringStep = ringStep
        self.attenuation = attenuation
    }

    /// The attenuation of the ring `distance` cycles/µm from the origin falls in (1 beyond the last).
    public func attenuation(at distance: Double) -> Double {
        let ring = Int((distance / ringStep).rounded())
        return ring < attenuation.count ? attenuation[ring] : 1
    }

    /// The strongest attenuation, as the power ratio measured ÷ predicted (1: no leak).
    public var peakLeak: Double { 1 / max(attenuation.min() ?? 1, 1e-9) }
}

/// Parameters of a 2D-SIM reconstruction: one entry per orientation.
public struct SIMParameters: Codable, Sendable, Equatable {
    public var angles: [SIMAngleParameters]
    public var flagged: Bool { angles.contains(where: \.flagged) }

    public init(angles: [SIMAngleParameters]) { self.angles = angles }

    /// Parameters taken from priors without estimation.
    public static func fromPriors(_ priors: [PatternPrior], phaseOffset: Double = 0) -> SIMParameters {
        SIMParameters(
            angles: priors.map {
                SIMAngleParameters(
                    kx: $0.kx, ky: $0.ky, phases: $0.phases.map { $0 + phaseOffset }, modulation: $0.modulation,
                    confidence: 0, source: "prior", flagged: false, reason: nil)
            })
    }
}

extension SIMParameters {
    /// Parameters to use as given (`moire reconstruct --parameters`): a JSON file as `--params-out`
    /// writes it (one entry per phase set; the first is taken) or a single set's parameters.
    /// They must describe `angles` orientations of `phases` frames each, with finite wave vectors
    /// and phases and a modulation in (0, 2]; they are marked `fixed`.
    public static func load(file: String, angles: Int, phases: Int) throws -> SIMParameters {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw MoireError(.io, "cannot read the parameters: \(error.localizedDescription)", place: file)
        }
        let decoder = JSONDecoder()
        var parameters: SIMParameters
        if let perSet = try? decoder.decode([SIMParameters].self, from: data) {
            guard let first = perSet.first else {
                throw MoireError(.format, "the parameters file holds no phase set", place: file)
            }
            parameters = first
        } else {
            do {
                parameters = try decoder.decode(SIMParameters.self, from: data)
            } catch {
                throw MoireError(
                    .format, "not SIM parameters as --params-out writes them: \(describe(decodingError: error))",
                    place: file)
            }
        }
        guard parameters.angles.count == angles else {
            throw MoireError(
                .usage, "the parameters describe \(parameters.angles.count) orientations, the data \(angles)",
                place: file)
        }
        for (a, angle) in parameters.angles.enumerated() {
            let place = "\(file): angle \(a)"
            guard angle.phases.count == phases else {
                throw MoireError(
                    .usage, "\(angle.phases.count) phases given for \(phases) frames per orientation", place: place)
            }
            guard angle.kx.isFinite, angle.ky.isFinite, angle.kMagnitude > 0 else {
                throw MoireError(.format, "the wave vector must be finite and not zero", place: place)
            }
            guard angle.phases.allSatisfy(\.isFinite) else {
                throw MoireError(.format, "the phases must be finite", place: place)
            }
            guard angle.modulation > 0, angle.modulation <= 2 else {
                throw MoireError(
                    .format, "modulation \(angle.modulation) is outside (0, 2]", place: place)
            }
            parameters.angles[a].source = "fixed"
            parameters.angles[a].flagged = false
            parameters.angles[a].reason = nil
        }
        return parameters
    }

    /// A decoding error as a path and what was wrong, for a user's message.
    private static func describe(decodingError error: Error) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return keys.isEmpty ? "" : " at \(keys)"
        }
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing \(key.stringValue)\(path(context))"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "\(context.debugDescription)\(path(context))"
        case DecodingError.dataCorrupted(let context):
            return "\(context.debugDescription)\(path(context))"
        default:
            return error.localizedDescription
        }
    }
}
