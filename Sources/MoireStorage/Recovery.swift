import Foundation
import Logging
import MoireCore

/// Turns an interrupted recording into a valid OME-TIFF from its index.
public enum Recovery {
    /// What recovery found and wrote.
    public struct Report: Sendable, Equatable {
        public var summary: RecordingSummary
        /// Planes the index named whose pixels were intact.
        public var recovered: Int
        /// Index records whose pixels failed their checksum (torn at the kill).
        public var corrupt: Int
        public var indexWasClosed: Bool
    }

    /// Reads `damaged` and its index and writes `output` (default: `<name>.recovered.ome.tif`).
    public static func recover(
        _ damaged: String, output: String? = nil, logger: Logger = Logger(label: "moire.recover")
    ) throws -> Report {
        let indexPath = RecordingIndex.path(for: damaged)
        guard FileManager.default.fileExists(atPath: indexPath) else {
            throw MoireError(
                .io,
                "no recording index beside the file (expected \(indexPath)); only Moiré recordings can be recovered",
                place: damaged)
        }
        let contents = try RecordingIndex.read(path: indexPath)
        let out = output ?? defaultOutput(damaged)
        guard out != damaged else {
            throw MoireError(.usage, "recovery output must differ from the damaged file", place: damaged)
        }
        let fileSize = try InputFile.size(damaged)
        guard let fh = FileHandle(forReadingAtPath: damaged) else {
            throw MoireError(.io, "cannot open the recording", place: damaged)
        }
        defer { try? fh.close() }
        let existed = FileManager.default.fileExists(atPath: out)
        do {
            let writer = try OMETiffWriter(path: out, layout: contents.layout, logger: logger)
            return try copyPlanes(contents, from: fh, fileSize: fileSize, into: writer, logger: logger)
        } catch {
            // A recovery that could not finish (a full disk, say) leaves no partial file behind.
            if !existed {
                try? FileManager.default.removeItem(atPath: out)
                try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: out))
            }
            throw error
        }
    }

    /// Copies every complete plane the index names, up to the first damaged one.
    private static func copyPlanes(
        _ contents: RecordingIndex.Contents, from fh: FileHandle, fileSize: UInt64, into writer: OMETiffWriter,
        logger: Logger
    ) throws -> Report {
        var recovered = 0
        var corrupt = 0
        for e in contents.entries {
            var header = e.plane.header
            guard e.plane.acquired else { continue }
            if header.missing {
                try writer.write(header: header, payload: UnsafeRawBufferPointer(start: nil, count: 0))
                continue
            }
            // A record is trusted only when it names one whole plane inside the file.
            guard e.bytes == UInt64(contents.layout.planeBytes), e.offset <= fileSize, e.bytes <= fileSize - e.offset
            else {
                corrupt += 1
                logger.warning(
                    "plane \(header.index): the index names \(e.bytes) bytes at offset \(e.offset), outside the file or not one plane; recovery stops here"
                )
                break
            }
            try fh.seek(toOffset: e.offset)
            let data = try fh.read(upToCount: Int(e.bytes)) ?? Data()
            guard data.count == Int(e.bytes), CRC32.checksum(data) == e.dataCRC else {
                corrupt += 1
                logger.warning("plane \(header.index): pixels incomplete; recovery stops here")
                break
            }
            header.index = writer.planesWritten
            try data.withUnsafeBytes { try writer.write(header: header, payload: $0) }
            recovered += 1
        }
        let summary = try writer.finish()
        return Report(summary: summary, recovered: recovered, corrupt: corrupt, indexWasClosed: contents.closed)
    }

    public static func defaultOutput(_ damaged: String) -> String {
        RecordingIndex.stem(of: damaged) + ".recovered.ome.tif"
    }
}
