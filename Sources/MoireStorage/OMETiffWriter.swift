import CTIFF
import Foundation
import Logging
import MoireCore

/// Summary of a finished recording.
public struct RecordingSummary: Codable, Sendable, Equatable {
    public var path: String
    public var planes: Int
    public var acquired: Int
    public var missing: Int
    public var padded: Int
    public var timepoints: Int
}

/// Writes a BigTIFF OME-TIFF plane by plane, with the crash-safe index beside it.
///
/// Each plane is one IFD with one uncompressed strip. The first IFD's ImageDescription holds a
/// placeholder until `finish()` writes the OME-XML for the planes actually acquired. Planes must
/// come in acquisition order (`header.index` = plane number); missing frames are written as zero
/// planes flagged `missing`. Single owner; not thread-safe.
public final class OMETiffWriter {
    public let path: String
    public let layout: RecordingLayout
    private var tif: OpaquePointer?
    private let index: IndexWriter
    private var planes: [PlaneRecord] = []
    private let zeros: UnsafeMutableRawPointer
    private let logger: Logger
    private let uuid = UUID().uuidString.lowercased()
    public private(set) var finished = false

    public var planesWritten: Int { planes.count }

    public init(path: String, layout: RecordingLayout, logger: Logger = Logger(label: "moire.storage")) throws {
        guard layout.width > 0, layout.height > 0, !layout.channels.isEmpty else {
            throw MoireError(.storage, "recording layout has no pixels or no channels", place: path)
        }
        self.path = path
        self.layout = layout
        self.logger = logger
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        tif = try TIFFCall.open(path, mode: "w8")
        index = try IndexWriter(path: RecordingIndex.path(for: path), layout: layout)
        zeros = .allocate(byteCount: layout.planeBytes, alignment: 64)
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: layout.planeBytes)
    }

    deinit {
        if let tif { TIFFClose(tif) }
        zeros.deallocate()
    }

    /// Appends one plane. `payload` is ignored (zeros written) when the header says missing.
    public func write(header: FrameHeader, payload: UnsafeRawBufferPointer) throws {
        guard !finished, let tif else { throw MoireError(.storage, "recording is already finished", place: path) }
        try layout.checkPlane(header, payloadBytes: payload.count, expectedIndex: planes.count, path: path)
        let missing = header.missing
        let data = missing ? UnsafeRawPointer(zeros) : payload.baseAddress!
        try setTags(tif, first: planes.isEmpty)
        try TIFFCall.check(
            TIFFWriteEncodedStrip(tif, 0, UnsafeMutableRawPointer(mutating: data), tmsize_t(layout.planeBytes)),
            "writing plane \(header.index)", path: path)
        var offsets: UnsafePointer<UInt64>?
        try TIFFCall.check(
            moire_tiff_get_u64_array(tif, UInt32(TIFFTAG_STRIPOFFSETS), &offsets), "reading strip offset", path: path)
        let offset = offsets?.pointee ?? 0
        try TIFFCall.check(TIFFWriteDirectory(tif), "writing directory \(header.index)", path: path)
        let record = PlaneRecord(header: header, acquired: true)
        let crc = CRC32.checksum(UnsafeRawBufferPointer(start: data, count: layout.planeBytes))
        try index.append(record, offset: offset, bytes: UInt64(layout.planeBytes), dataCRC: crc)
        planes.append(record)
    }

    private func setTags(_ tif: OpaquePointer, first: Bool) throws {
        let ok =
            moire_tiff_set_u32(tif, UInt32(TIFFTAG_IMAGEWIDTH), UInt32(layout.width)) != 0
            && moire_tiff_set_u32(tif, UInt32(TIFFTAG_IMAGELENGTH), UInt32(layout.height)) != 0
            && moire_tiff_set_u16(tif, UInt32(TIFFTAG_BITSPERSAMPLE), UInt16(layout.pixel.bytesPerPixel * 8)) != 0
            && moire_tiff_set_u16(tif, UInt32(TIFFTAG_SAMPLESPERPIXEL), 1) != 0
            && moire_tiff_set_u16(
                tif, UInt32(TIFFTAG_SAMPLEFORMAT),
                UInt16(layout.pixel == .uint16 ? SAMPLEFORMAT_UINT : SAMPLEFORMAT_IEEEFP)) != 0
            && moire_tiff_set_u16(tif, UInt32(TIFFTAG_PHOTOMETRIC), UInt16(PHOTOMETRIC_MINISBLACK)) != 0
            && moire_tiff_set_u16(tif, UInt32(TIFFTAG_PLANARCONFIG), UInt16(PLANARCONFIG_CONTIG)) != 0
            && moire_tiff_set_u16(tif, UInt32(TIFFTAG_COMPRESSION), UInt16(COMPRESSION_NONE)) != 0
            && moire_tiff_set_u32(tif, UInt32(TIFFTAG_ROWSPERSTRIP), UInt32(layout.height)) != 0
            && moire_tiff_set_string(tif, UInt32(TIFFTAG_SOFTWARE), "Moire") != 0
            && moire_tiff_set_rational_resolution(
                tif, Float(1e4 / layout.pixelSizeUm), Float(1e4 / layout.pixelSizeUm), UInt16(RESUNIT_CENTIMETER)) != 0
        guard ok else { throw MoireError(.storage, "setting TIFF tags failed: \(TIFFCall.lastError())", place: path) }
        if first {
            let placeholder =
                "Moiré recording in progress (run \(layout.run)); run `moire recover` if this text remains."
            try TIFFCall.check(
                moire_tiff_set_string(tif, UInt32(TIFFTAG_IMAGEDESCRIPTION), placeholder), "setting description",
                path: path)
        }
    }

    /// Completes the last time point with padding planes (flagged not acquired), writes the
    /// OME-XML for what was acquired, and closes the file and its index.
    @discardableResult
    public func finish() throws -> RecordingSummary {
        guard !finished, let t = tif else { throw MoireError(.storage, "recording is already finished", place: path) }
        var padded = 0
        let ppt = layout.planesPerTimepoint
        if planes.isEmpty {
            // Nothing acquired: leave no empty (unreadable) TIFF behind.
            finished = true
            TIFFClose(t); tif = nil
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: path))
            throw MoireError(.storage, "no plane was acquired; nothing was recorded", place: path)
        }
        while planes.count % ppt != 0 {
            let i = planes.count
            let co = layout.coordinates(ofPlane: i)
            var h = planes[planes.count - 1].header
            h.index = i; h.seq = -1; h.t = co.t; h.c = co.c; h.z = co.z; h.angle = co.angle; h.phase = co.phase
            h.channel = layout.channels[co.c]; h.missing = true; h.state = DeviceState()
            try setTags(t, first: false)
            try TIFFCall.check(
                TIFFWriteEncodedStrip(t, 0, zeros, tmsize_t(layout.planeBytes)), "padding plane \(i)", path: path)
            try TIFFCall.check(TIFFWriteDirectory(t), "writing directory \(i)", path: path)
            planes.append(PlaneRecord(header: h, acquired: false))
            padded += 1
        }
        TIFFClose(t)
        tif = nil
        try Self.writeDescription(
            path: path,
            xml: OMEXML.document(
                layout: layout, planes: planes, uuid: uuid,
                fileName: (path as NSString).lastPathComponent))
        let missing = planes.filter { $0.acquired && $0.header.missing }.count
        let summary = RecordingSummary(
            path: path, planes: planes.count, acquired: planes.count - padded - missing,
            missing: missing, padded: padded, timepoints: planes.count / ppt)
        try index.close(summary: JSONEncoder().encode(summary))
        finished = true
        logger.info(
            "recording closed", metadata: ["path": "\(path)", "planes": "\(summary.planes)", "missing": "\(missing)"])
        return summary
    }

    /// Points the first IFD's ImageDescription at `xml`, appended at the end of the file.
    ///
    /// libtiff cannot rewrite a directory without re-chopping its strips (strip chopping cannot
    /// be turned off in r+ mode), so this patches the one BigTIFF tag entry (count and offset,
    /// 16 bytes) in place. Every plane stays where libtiff wrote it.
    static func writeDescription(path: String, xml: String) throws {
        guard let fh = FileHandle(forUpdatingAtPath: path) else {
            throw MoireError(.io, "cannot reopen the recording", place: path)
        }
        defer { try? fh.close() }
        func read(_ offset: UInt64, _ n: Int) throws -> Data {
            try fh.seek(toOffset: offset)
            let d = try fh.read(upToCount: n) ?? Data()
            guard d.count == n else {
                throw MoireError(.storage, "recording is truncated at byte \(offset)", place: path)
            }
            return d
        }
        func le<T: FixedWidthInteger>(_ d: Data, _ at: Int, _: T.Type) -> T {
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(d[d.startIndex + at + i]) << (8 * i) }
            return v
        }
        let header = try read(0, 16)
        guard header[0] == 0x49, header[1] == 0x49, le(header, 2, UInt16.self) == 43 else {
            throw MoireError(.storage, "not a little-endian BigTIFF", place: path)
        }
        let ifd0 = le(header, 8, UInt64.self)
        let count = le(try read(ifd0, 8), 0, UInt64.self)
        guard count < 4096 else { throw MoireError(.storage, "first directory is corrupt", place: path) }
        let entries = try read(ifd0 + 8, Int(count) * 20)
        for i in 0..<Int(count) where le(entries, i * 20, UInt16.self) == 270 {
            var bytes = Data(xml.utf8)
            bytes.append(0)
            let end = try fh.seekToEnd()
            let at = (end + 7) / 8 * 8
            try fh.seek(toOffset: end)
            try fh.write(contentsOf: Data(count: Int(at - end)) + bytes)
            try fh.synchronize()
            var patch = Data()
            patch.appendLE(UInt64(bytes.count))
            patch.appendLE(at)
            try fh.seek(toOffset: ifd0 + 8 + UInt64(i * 20) + 4)
            try fh.write(contentsOf: patch)
            try fh.synchronize()
            return
        }
        throw MoireError(.storage, "first directory has no ImageDescription to replace", place: path)
    }
}
