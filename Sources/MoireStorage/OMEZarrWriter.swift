import CZstd
import Foundation
import Logging
import MoireCore

/// Writes a recording as OME-Zarr: NGFF 0.4 on Zarr v2, one zstd-compressed chunk per plane.
///
/// The store is a directory. Its group metadata (`.zgroup`, `.zattrs` with `multiscales`, `omero`
/// and the Moiré layout) and every level's `.zarray` are written before the first plane, with the
/// planned shape `(t, c, z, y, x)`. A SIM recording's angles and phases are folded into the channel
/// axis (c = (channel · angles + angle) · phases + phase, named in `omero.channels`), because NGFF
/// allows five axes. Each plane becomes one chunk per pyramid level (level l halves y and x l
/// times, by 2×2 means), written to a temporary file and renamed into place, so a run killed at
/// any instant leaves every complete chunk readable and no partial one; chunks never written
/// (missing frames, time points not reached) read as the fill value 0. Each plane's header is
/// appended to the plane log beside the store (`NAME.ome.zarr.moire-planes.jsonl`; inside the
/// store zarr-python would warn about a file that is not part of the hierarchy) once its chunks
/// are in place.
/// Single owner; not thread-safe.
public final class OMEZarrWriter {
    public let path: String
    public let layout: RecordingLayout
    /// Pyramid levels (1 = full resolution only).
    public let levels: Int
    private let logger: Logger
    private var planes: [PlaneRecord] = []
    private let planeLog: FileHandle
    private var compressed: [UInt8]
    /// Level l's plane (index l − 1), made once and refilled for every plane.
    private var pyramid: [[UInt8]]
    private let encoder = JSONEncoder()
    public private(set) var finished = false

    public var planesWritten: Int { planes.count }

    /// zstd level: level 1 compresses a 512² uint16 camera frame in about a millisecond.
    static let compressionLevel: Int32 = 1
    /// The plane log beside a store: one JSON plane record per line.
    public static func planeLogPath(for store: String) -> String { store + ".moire-planes.jsonl" }

    public init(path: String, layout: RecordingLayout, logger: Logger = Logger(label: "moire.storage")) throws {
        guard layout.width > 0, layout.height > 0, !layout.channels.isEmpty else {
            throw MoireError(.storage, "recording layout has no pixels or no channels", place: path)
        }
        _ = try layout.validated()
        self.path = path
        self.layout = layout
        self.logger = logger
        var levelCount = 1
        while levelCount < 4, min(layout.width, layout.height) >> levelCount >= 64 { levelCount += 1 }
        levels = levelCount
        let files = FileManager.default
        // The caller decided about overwriting (the pipeline refuses an existing path without --overwrite).
        if files.fileExists(atPath: path) { try files.removeItem(atPath: path) }
        try? files.removeItem(atPath: Self.planeLogPath(for: path))
        do {
            try files.createDirectory(atPath: path, withIntermediateDirectories: true)
            try Self.writeJSON(["zarr_format": 2], to: "\(path)/.zgroup")
            try Self.writeJSON(Self.groupAttributes(layout, levels: levelCount), to: "\(path)/.zattrs")
            for level in 0..<levelCount {
                try files.createDirectory(atPath: "\(path)/\(level)", withIntermediateDirectories: true)
                try Self.writeJSON(Self.arrayMetadata(layout, level: level), to: "\(path)/\(level)/.zarray")
            }
            let logPath = Self.planeLogPath(for: path)
            guard files.createFile(atPath: logPath, contents: nil), let log = FileHandle(forWritingAtPath: logPath)
            else { throw MoireError(.io, "cannot create the plane log", place: logPath) }
            planeLog = log
        } catch let error as MoireError {
            throw error
        } catch {
            throw MoireError(.io, "cannot create the OME-Zarr store: \(error.localizedDescription)", place: path)
        }
        compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(layout.planeBytes))
        pyramid = (1..<levelCount).map { level in
            [UInt8](
                repeating: 0, count: (layout.width >> level) * (layout.height >> level) * layout.pixel.bytesPerPixel)
        }
    }

    deinit { try? planeLog.close() }

    /// The channel-axis index of plane coordinates (angles and phases folded in).
    public static func channelIndex(_ layout: RecordingLayout, c: Int, angle: Int, phase: Int) -> Int {
        (c * layout.angles + angle) * layout.phases + phase
    }

    /// Appends one plane; a missing one writes no chunk (it reads as 0) and is flagged in the plane log.
    public func write(header: FrameHeader, payload: UnsafeRawBufferPointer) throws {
        guard !finished else { throw MoireError(.storage, "recording is already finished", place: path) }
        try layout.checkPlane(header, payloadBytes: payload.count, expectedIndex: planes.count, path: path)
        if !header.missing {
            let at = layout.coordinates(ofPlane: header.index)
            let channel = Self.channelIndex(layout, c: at.c, angle: at.angle, phase: at.phase)
            let key = "\(at.t)/\(channel)/\(at.z)/0/0"
            let plane = UnsafeRawBufferPointer(rebasing: payload[0..<layout.planeBytes])
            try writeChunk(plane, to: "\(path)/0/\(key)")
            for level in 1..<levels {
                let finer = layout.width >> (level - 1)
                let finerHeight = layout.height >> (level - 1)
                try pyramid.withUnsafeMutableBufferPointer { buffers in
                    try buffers[level - 1].withUnsafeMutableBytes { target in
                        if level == 1 {
                            Self.halve(plane, width: finer, height: finerHeight, pixel: layout.pixel, into: target)
                        } else {
                            buffers[level - 2].withUnsafeBytes { source in
                                Self.halve(source, width: finer, height: finerHeight, pixel: layout.pixel, into: target)
                            }
                        }
                        try writeChunk(UnsafeRawBufferPointer(target), to: "\(path)/\(level)/\(key)")
                    }
                }
            }
        }
        let record = PlaneRecord(header: header, acquired: true)
        var line = try encoder.encode(record)
        line.append(0x0A)
        do { try planeLog.write(contentsOf: line) } catch {
            throw MoireError(.io, "writing the plane log failed: \(error.localizedDescription)", place: path)
        }
        planes.append(record)
    }

    /// Compresses `bytes` with zstd and puts them at `chunkPath` atomically (temporary file, rename).
    private func writeChunk(_ bytes: UnsafeRawBufferPointer, to chunkPath: String) throws {
        let size = compressed.withUnsafeMutableBytes { out in
            ZSTD_compress(out.baseAddress, out.count, bytes.baseAddress, bytes.count, Self.compressionLevel)
        }
        guard ZSTD_isError(size) == 0 else {
            let reason = String(cString: ZSTD_getErrorName(size))
            throw MoireError(.storage, "zstd could not compress a plane: \(reason)", place: chunkPath)
        }
        let directory = (chunkPath as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw MoireError(
                .storage, "cannot make the chunk's folder: \(error.localizedDescription)", place: directory)
        }
        try compressed.withUnsafeBytes {
            try Self.writeAtomically(UnsafeRawBufferPointer(rebasing: $0[0..<size]), to: chunkPath)
        }
    }

    /// Writes `bytes` to a temporary file beside `file` and renames it into place: a reader sees the
    /// whole file or none. A full disk or failing device is named.
    static func writeAtomically(_ bytes: UnsafeRawBufferPointer, to file: String) throws {
        let directory = (file as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.writing-\((file as NSString).lastPathComponent)"
        func failure(_ what: String) -> MoireError {
            let code = errno
            let reason = OSFailure.describe(code) ?? String(cString: strerror(code))
            unlink(temporary)
            return MoireError(.storage, "\(reason) while \(what)", place: file)
        }
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else { throw failure("creating the file") }
        var written = 0
        while written < bytes.count {
            let n = Foundation.write(descriptor, bytes.baseAddress! + written, bytes.count - written)
            guard n > 0 else {
                let error = failure("writing the file")
                close(descriptor)
                throw error
            }
            written += n
        }
        guard close(descriptor) == 0 else { throw failure("closing the file") }
        guard rename(temporary, file) == 0 else { throw failure("moving the file into place") }
    }

    /// `source` (a `width` × `height` plane) at half the width and height into `target`: each pixel
    /// the mean of a 2×2 block (uint16 rounded; an odd last row or column dropped).
    static func halve(
        _ source: UnsafeRawBufferPointer, width: Int, height: Int, pixel: PixelFormat,
        into target: UnsafeMutableRawBufferPointer
    ) {
        switch pixel {
        case .uint16:
            halve(source, width, height, into: target, as: UInt16.self) { a, b, c, d in
                UInt16((UInt32(a) + UInt32(b) + UInt32(c) + UInt32(d) + 2) / 4)
            }
        case .float32:
            halve(source, width, height, into: target, as: Float.self) { a, b, c, d in (a + b + c + d) / 4 }
        }
    }

    private static func halve<Sample>(
        _ source: UnsafeRawBufferPointer, _ width: Int, _ height: Int, into target: UnsafeMutableRawBufferPointer,
        as _: Sample.Type, mean: (Sample, Sample, Sample, Sample) -> Sample
    ) {
        let s = source.bindMemory(to: Sample.self)
        let t = target.bindMemory(to: Sample.self)
        let halfWidth = width / 2
        for y in 0..<(height / 2) {
            for x in 0..<halfWidth {
                let top = 2 * y * width + 2 * x
                t[y * halfWidth + x] = mean(s[top], s[top + 1], s[top + width], s[top + width + 1])
            }
        }
    }

    /// Completes the recording: the Moiré summary goes into `.zattrs`. Time points not reached keep
    /// the planned shape (their chunks read as 0) and are counted as padded.
    @discardableResult
    public func finish() throws -> RecordingSummary {
        guard !finished else { throw MoireError(.storage, "recording is already finished", place: path) }
        finished = true
        try? planeLog.synchronize()
        try? planeLog.close()
        if planes.isEmpty {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: Self.planeLogPath(for: path))
            throw MoireError(.storage, "no plane was acquired; nothing was recorded", place: path)
        }
        let perTimepoint = layout.planesPerTimepoint
        let timepoints = (planes.count + perTimepoint - 1) / perTimepoint
        let missing = planes.filter { $0.header.missing }.count
        let padded = timepoints * perTimepoint - planes.count
        let summary = RecordingSummary(
            path: path, planes: timepoints * perTimepoint, acquired: planes.count - missing, missing: missing,
            padded: padded, timepoints: timepoints)
        var attributes = Self.groupAttributes(layout, levels: levels)
        if var moire = attributes["moire"] as? [String: Any] {
            moire["summary"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(summary))
            moire["missing_planes"] = planes.filter { $0.header.missing }.map { $0.header.index }
            attributes["moire"] = moire
        }
        try Self.writeJSON(attributes, to: "\(path)/.zattrs")
        logger.info(
            "recording closed", metadata: ["path": "\(path)", "planes": "\(summary.planes)", "missing": "\(missing)"])
        return summary
    }

    // MARK: Metadata

    /// `(t, c, z, y, x)` with angles and phases folded into c.
    static func shape(_ layout: RecordingLayout, level: Int) -> [Int] {
        [
            layout.timepoints, layout.channels.count * layout.angles * layout.phases, layout.zPlanes,
            layout.height >> level, layout.width >> level,
        ]
    }

    static func arrayMetadata(_ layout: RecordingLayout, level: Int) -> [String: Any] {
        let shape = shape(layout, level: level)
        return [
            "zarr_format": 2,
            "shape": shape,
            "chunks": [1, 1, 1, shape[3], shape[4]],
            "dtype": layout.pixel == .uint16 ? "<u2" : "<f4",
            "compressor": ["id": "zstd", "level": Int(compressionLevel)],
            "fill_value": 0,
            "order": "C",
            "filters": NSNull(),
            "dimension_separator": "/",
        ]
    }

    static func groupAttributes(_ layout: RecordingLayout, levels: Int) -> [String: Any] {
        let micrometre = "micrometer"
        let axes: [[String: String]] = [
            ["name": "t", "type": "time"],
            ["name": "c", "type": "channel"],
            ["name": "z", "type": "space", "unit": micrometre],
            ["name": "y", "type": "space", "unit": micrometre],
            ["name": "x", "type": "space", "unit": micrometre],
        ]
        // NGFF scales are positive (napari refuses a layer with a zero scale): a single plane, or a
        // stack with no stated step, gets 1 µm along z; a step downward is a spacing all the same.
        let zSpacing = layout.zPlanes > 1 && layout.zStepUm != 0 ? abs(layout.zStepUm) : 1
        let datasets: [[String: Any]] = (0..<levels).map { level in
            let pixel = layout.pixelSizeUm * Double(1 << level)
            return [
                "path": "\(level)",
                "coordinateTransformations": [["type": "scale", "scale": [1.0, 1.0, zSpacing, pixel, pixel]]],
            ]
        }
        var channels: [[String: Any]] = []
        for (c, name) in layout.channels.enumerated() {
            for angle in 0..<layout.angles {
                for phase in 0..<layout.phases {
                    let label =
                        layout.angles * layout.phases > 1 ? "\(name) angle \(angle) phase \(phase)" : name
                    let white = layout.pixel == .uint16 ? 65_535.0 : 1.0
                    channels.append([
                        "label": label,
                        "color": Self.color(emissionNm: c < layout.emissionNm.count ? layout.emissionNm[c] : 0),
                        "active": true,
                        "window": ["start": 0.0, "end": white, "min": 0.0, "max": white],
                    ])
                }
            }
        }
        let layoutJSON = (try? JSONEncoder().encode(layout)).flatMap { try? JSONSerialization.jsonObject(with: $0) }
        return [
            "multiscales": [
                [
                    "version": "0.4",
                    "name": layout.name,
                    "axes": axes,
                    "datasets": datasets,
                    "type": "local_mean",
                    "metadata": ["method": "mean of 2×2 blocks in y and x; z and t unchanged"],
                ] as [String: Any]
            ],
            "omero": ["name": layout.name, "version": "0.4", "channels": channels] as [String: Any],
            "moire": [
                "format": 1,
                "layout": layoutJSON ?? NSNull(),
                "channel_axis": "channel × angle × phase (phase fastest)",
                "plane_log": "beside the store: NAME.ome.zarr.moire-planes.jsonl",
            ] as [String: Any],
        ]
    }

    /// A display colour (hex RGB) for an emission wavelength.
    static func color(emissionNm: Double) -> String {
        switch emissionNm {
        case ..<1: "FFFFFF"
        case ..<490: "0080FF"
        case ..<570: "00FF00"
        case ..<620: "FF8000"
        default: "FF0000"
        }
    }

    static func writeJSON(_ object: Any, to file: String) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try data.withUnsafeBytes { try writeAtomically($0, to: file) }
    }
}

extension OMEZarrWriter: RecordingWriter {}

/// What an OME-Zarr recording written by Moiré says about itself: its layout (`.zattrs` → `moire`),
/// the plane log beside the store, and whether it was closed cleanly (the summary is written last).
public struct OMEZarrContents: Sendable {
    public var layout: RecordingLayout
    /// Plane records in the order written; a torn last line (a killed run) is left out.
    public var planes: [PlaneRecord]
    /// Lines of the plane log that could not be read.
    public var unreadableLines: Int
    public var summary: RecordingSummary?

    /// The largest `.zattrs` read (a Moiré store's is a few kB).
    static let largestAttributesFile: UInt64 = 16 << 20
    /// The most bytes one line of the plane log may take (a record is about 600).
    static let largestPlaneRecord: UInt64 = 8 << 10
    /// The largest plane log read (about 3.5 million planes).
    static let largestPlaneLog: UInt64 = 2 << 30

    /// The bytes of `file`, nil when there is none; a regular file of at most `limit` bytes only (a
    /// FIFO would block the reader, a huge file fill memory).
    static func contentsIfPresent(_ file: String, atMost limit: UInt64, what: String) throws -> Data? {
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        let size = try InputFile.size(file)
        guard size <= limit else {
            throw MoireError(.format, "\(size) bytes of \(what), more than the \(limit) read; refused", place: file)
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw MoireError(.io, "cannot read the \(what)", place: file)
        }
        return data
    }

    /// Reads the store at `path`; an error names the file that is missing or malformed.
    public static func read(path: String) throws -> OMEZarrContents {
        let attributesPath = "\(path)/.zattrs"
        guard let data = try contentsIfPresent(attributesPath, atMost: largestAttributesFile, what: "attributes")
        else {
            throw MoireError(.format, "not an OME-Zarr store (no .zattrs)", place: path)
        }
        let attributes = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        guard let moire = attributes?["moire"] as? [String: Any], let layoutObject = moire["layout"],
            let layoutData = try? JSONSerialization.data(withJSONObject: layoutObject),
            let layout = try? JSONDecoder().decode(RecordingLayout.self, from: layoutData).validated()
        else {
            throw MoireError(.format, "no Moiré recording layout in the store's attributes", place: attributesPath)
        }
        let summary = (moire["summary"]).flatMap { try? JSONSerialization.data(withJSONObject: $0) }
            .flatMap { try? JSONDecoder().decode(RecordingSummary.self, from: $0) }
        let logPath = OMEZarrWriter.planeLogPath(for: path)
        let planned = UInt64(layout.timepoints * layout.planesPerTimepoint)
        let logLimit = min(planned * largestPlaneRecord, largestPlaneLog)
        let log = try contentsIfPresent(logPath, atMost: logLimit, what: "plane log") ?? Data()
        var planes: [PlaneRecord] = []
        var unreadable = 0
        for line in log.split(separator: 0x0A) where !line.isEmpty {
            if let record = try? JSONDecoder().decode(PlaneRecord.self, from: Data(line)) {
                planes.append(record)
            } else {
                unreadable += 1
            }
        }
        return OMEZarrContents(layout: layout, planes: planes, unreadableLines: unreadable, summary: summary)
    }
}
