import Foundation

/// How the generalized Wiener filter of 2D-SIM is regularised.
public enum WienerParameter: Codable, Sendable, Equatable, CustomStringConvertible {
    /// From each phase set's own spectra: the noise power measured beyond the OTF support, the
    /// object's power spectrum as a power law fitted within it; the regularisation at every
    /// frequency is their ratio (the mean-square-error optimal linear filter).
    case adaptive
    /// One constant w (relative to the OTF, which is 1 at 0) at every frequency.
    case fixed(Double)

    public var description: String {
        switch self {
        case .adaptive: return "auto"
        case .fixed(let w): return String(w)
        }
    }

    /// The constant w, nil when adaptive.
    public var constant: Double? {
        if case .fixed(let w) = self { return w }
        return nil
    }

    /// `auto` or a positive number (as typed by a user or written in a protocol).
    public init?(_ text: String) {
        if text == "auto" {
            self = .adaptive
            return
        }
        guard let w = Double(text), w.isFinite, w > 0 else { return nil }
        self = .fixed(w)
    }
}

/// How bands ±1 are attenuated near their order centres, where band 0 leaks into them (phase
/// errors, out-of-focus light the pattern modulates as well) and would leave peaks at ±k.
public enum OrderSuppression: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Per orientation and ring, from the leak measured at estimation (`SIMAngleParameters.orderLeak`):
    /// none where band +1 near its origin holds about what the in-focus signal predicts, down to
    /// the prediction where it holds several times more.
    case adaptive
    /// The same strength (0…1) for every orientation.
    case fixed(Double)

    public var description: String {
        switch self {
        case .adaptive: return "auto"
        case .fixed(let s): return String(s)
        }
    }

    /// `auto` or a number in 0…1.
    public init?(_ text: String) {
        if text == "auto" {
            self = .adaptive
            return
        }
        guard let s = Double(text), s >= 0, s <= 1 else { return nil }
        self = .fixed(s)
    }
}
