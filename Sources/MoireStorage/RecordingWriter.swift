import Foundation
import Logging
import MoireCore

extension RecordingFormat {
    /// The path of a derived stream's recording beside `recording` (`NAME.sr.ome.tif`,
    /// `NAME.sr.ome.zarr`, …), in the same format.
    public static func derivedPath(of recording: String, stream: String) -> String {
        RecordingIndex.stem(of: recording) + ".\(stream)" + RecordingFormat(path: recording).suffix
    }
}

/// What the recorder writes planes into, whatever the container.
public protocol RecordingWriter: AnyObject {
    /// Planes written so far (acquired or missing).
    var planesWritten: Int { get }
    /// Appends one plane, in acquisition order (`header.index` = plane number).
    func write(header: FrameHeader, payload: UnsafeRawBufferPointer) throws
    /// Completes the recording; what it holds.
    @discardableResult
    func finish() throws -> RecordingSummary
}

extension OMETiffWriter: RecordingWriter {}

extension RecordingFormat {
    /// A writer for a new recording at `path` in this format.
    public func makeWriter(path: String, layout: RecordingLayout, logger: Logger) throws -> any RecordingWriter {
        switch self {
        case .omeTiff: try OMETiffWriter(path: path, layout: layout, logger: logger)
        case .omeZarr: try OMEZarrWriter(path: path, layout: layout, logger: logger)
        }
    }
}
