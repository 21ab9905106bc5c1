/// The error every Moiré layer throws: a kind, a message for people, and the place it concerns.
public struct MoireError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, coarsely, so callers can react without parsing text.
    public enum Kind: String, Sendable, Equatable {
        case config, validation, io, format, transport, hardware, deadline, state, storage, numeric, usage, unsupported,
            aborted, permission
    }

    public var kind: Kind
    public var message: String
    /// Where: a file:line:column, a device name, an endpoint — whatever locates the problem.
    public var place: String?

    public init(_ kind: Kind, _ message: String, place: String? = nil) {
        self.kind = kind
        self.message = message
        self.place = place
    }

    public var description: String {
        if let place { return "\(place): \(message)" }
        return message
    }
}
