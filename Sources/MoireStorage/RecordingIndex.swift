import Foundation
import MoireCore

/// The append-only binary index beside a recording: one checksummed record per plane.
///
/// A plane's record is written only after its pixels are in the TIFF, so a recording killed at
/// any instant has an index whose intact records name exactly the complete planes.
/// Format (little endian), documented in docs/recording-format.md:
/// `MOIREIDX` u32 version, u32 n, layout JSON[n], u32 crc — then records
/// `MRFR` u32 n, u64 offset, u64 bytes, u32 dataCRC, header JSON[n], u32 crc(record) —
/// and at a clean close `MEND` u32 n, summary JSON[n], u32 crc.
public enum RecordingIndex {
    static let magic = Array("MOIREIDX".utf8)
    static let frameTag: UInt32 = 0x5246_524D  // "MRFR"
    static let endTag: UInt32 = 0x444E_454D  // "MEND"

    /// The index path for a recording.
    public static func path(for recording: String) -> String { recording + ".moire-index" }

    /// A recording's path without its extension (TIFF or Zarr): the base for files made beside it.
    public static func stem(of recording: String) -> String {
        for ext in [".ome.tif", ".ome.tiff", ".tif", ".tiff", ".ome.zarr", ".zarr"] where recording.hasSuffix(ext) {
            return String(recording.dropLast(ext.count))
        }
        return recording
    }

    /// One intact plane record.
    public struct Entry: Sendable, Equatable {
        public var plane: PlaneRecord
        public var offset: UInt64
        public var bytes: UInt64
        public var dataCRC: UInt32
    }

    /// What a read of an index found.
    public struct Contents: Sendable {
        public var layout: RecordingLayout
        public var entries: [Entry]
        public var closed: Bool
        /// Bytes after the last intact record (a torn write), 0 when clean.
        public var trailingBytes: Int
    }

    /// Reads every intact record; stops at the first torn or corrupt one.
    public static func read(path: String) throws -> Contents {
        try InputFile.requireRegular(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MoireError(.io, "cannot read the recording index", place: path)
        }
        var r = ByteReader(data: data)
        guard let m = r.bytes(8), Array(m) == magic, let version = r.u32(), version == 1,
            let n = r.u32(), let json = r.bytes(Int(n)), let crc = r.u32(), crc == CRC32.checksum(Data(json))
        else {
            throw MoireError(.format, "not a Moiré recording index (bad header)", place: path)
        }
        let layout: RecordingLayout
        do { layout = try JSONDecoder().decode(RecordingLayout.self, from: Data(json)).validated() } catch {
            throw MoireError(.format, "index layout is malformed: \(error)", place: path)
        }
        var entries: [Entry] = []
        var closed = false
        while r.remaining > 0 {
            let start = r.position
            guard let tag = r.u32(), let len = r.u32(), len < 16 << 20 else { r.position = start; break }
            if tag == endTag {
                guard let body = r.bytes(Int(len)), let c = r.u32() else { r.position = start; break }
                let covered = data[data.startIndex + start..<data.startIndex + start + 8] + body
                if c == CRC32.checksum(Data(covered)) { closed = true } else { r.position = start }
                break
            }
            guard tag == frameTag, let offset = r.u64(), let bytes = r.u64(), let dcrc = r.u32(),
                let body = r.bytes(Int(len)), let c = r.u32()
            else { r.position = start; break }
            let covered = data[data.startIndex + start..<data.startIndex + r.position - 4]
            guard c == CRC32.checksum(Data(covered)),
                let plane = try? JSONDecoder().decode(PlaneRecord.self, from: Data(body))
            else { r.position = start; break }
            entries.append(Entry(plane: plane, offset: offset, bytes: bytes, dataCRC: dcrc))
        }
        return Contents(layout: layout, entries: entries, closed: closed, trailingBytes: r.remaining)
    }
}

/// Appends index records with plain write(2): nothing buffered in this process.
final class IndexWriter {
    let path: String
    private let fd: Int32

    init(path: String, layout: RecordingLayout) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw MoireError(.io, "cannot create the recording index: \(String(cString: strerror(errno)))", place: path)
        }
        let json = try JSONEncoder().encode(layout)
        var d = Data(RecordingIndex.magic)
        d.appendLE(UInt32(1)); d.appendLE(UInt32(json.count)); d.append(json); d.appendLE(CRC32.checksum(json))
        try write(d)
    }

    deinit { _ = Glibc.close(fd) }

    func append(_ plane: PlaneRecord, offset: UInt64, bytes: UInt64, dataCRC: UInt32) throws {
        let json = try JSONEncoder().encode(plane)
        var d = Data()
        d.appendLE(RecordingIndex.frameTag); d.appendLE(UInt32(json.count)); d.appendLE(offset); d.appendLE(bytes)
        d.appendLE(dataCRC); d.append(json)
        d.appendLE(CRC32.checksum(d))
        try write(d)
    }

    func close(summary: Data) throws {
        var d = Data()
        d.appendLE(RecordingIndex.endTag); d.appendLE(UInt32(summary.count)); d.append(summary)
        d.appendLE(CRC32.checksum(d))
        try write(d)
        fsync(fd)
    }

    private func write(_ d: Data) throws {
        try d.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = Foundation.write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    let code = errno
                    let reason = OSFailure.describe(code) ?? String(cString: strerror(code))
                    throw MoireError(.io, "index write failed: \(reason)", place: path)
                }
                done += n
            }
        }
    }
}

extension Data {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        var le = v.littleEndian
        Swift.withUnsafeBytes(of: &le) { append(contentsOf: $0) }
    }
}

/// A bounds-checked little-endian reader: returns nil rather than trapping on short input.
struct ByteReader {
    let data: Data
    var position = 0
    var remaining: Int { data.count - position }

    mutating func bytes(_ n: Int) -> Data? {
        guard n >= 0, remaining >= n else { return nil }
        let s = data.startIndex + position
        position += n
        return data[s..<s + n]
    }

    mutating func u32() -> UInt32? { int(UInt32.self) }
    mutating func u64() -> UInt64? { int(UInt64.self) }

    private mutating func int<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard let b = bytes(MemoryLayout<T>.size) else { return nil }
        var v: T = 0
        for (i, byte) in b.enumerated() { v |= T(byte) << (8 * i) }
        return v
    }
}
