import Foundation

/// The container a recording is written in. A path's suffix names it: `.ome.zarr` or `.zarr` is
/// OME-Zarr (NGFF 0.4 on Zarr v2), anything else OME-TIFF; a protocol may state it
/// (`outputs.recording_format`), and then a path without a recording suffix takes the format's.
public enum RecordingFormat: String, Sendable, Equatable, Codable, CaseIterable {
    case omeTiff = "ome-tiff"
    case omeZarr = "ome-zarr"

    /// The format `path` is written in (OME-TIFF unless its suffix names OME-Zarr).
    public init(path: String) {
        self = Self.named(by: path) ?? .omeTiff
    }

    /// The format that `path`'s suffix names, or nil when it has no recording suffix.
    public static func named(by path: String) -> RecordingFormat? {
        let lower = path.lowercased()
        let trimmed = lower.hasSuffix("/") ? String(lower.dropLast()) : lower
        if trimmed.hasSuffix(".zarr") { return .omeZarr }
        if [".tif", ".tiff"].contains(where: { trimmed.hasSuffix($0) }) { return .omeTiff }
        return nil
    }

    /// The suffix of a recording in this format (derived recordings take it too).
    public var suffix: String {
        switch self {
        case .omeTiff: ".ome.tif"
        case .omeZarr: ".ome.zarr"
        }
    }

    /// `path` as a recording in this format: a path without a recording suffix gets this format's;
    /// a path whose suffix names the other format is refused.
    public func recordingPath(_ path: String) throws -> String {
        switch Self.named(by: path) {
        case nil:
            return path + suffix
        case self:
            return path
        case let other?:
            throw MoireError(
                .usage,
                "the recording format is \(rawValue) but the path's suffix names \(other.rawValue); "
                    + "end the path with \(suffix) or leave the suffix out", place: path)
        }
    }
}
