import CZstd
import Foundation
import MoireCore

/// Reads a recording plane by plane, whatever its container (OME-TIFF or OME-Zarr): what the
/// offline tools and the replay camera need of it.
public protocol RecordingReader: AnyObject {
    var path: String { get }
    var width: Int { get }
    var height: Int { get }
    var pixel: PixelFormat { get }
    var planeCount: Int { get }
    /// The recording layout (nil for files that Moiré did not write).
    var layout: RecordingLayout? { get }
    /// Plane `i` as native pixels (`pixel` format) into `out`.
    func readPlane(_ i: Int, into out: UnsafeMutableRawBufferPointer) throws
    /// Per-plane records (nil for files that Moiré did not write).
    func planeRecords() -> [PlaneRecord]?
}

extension RecordingReader {
    /// Plane `i` as floats.
    public func readPlaneFloat(_ i: Int) throws -> [Float] {
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: width * height * pixel.bytesPerPixel, alignment: 16)
        defer { raw.deallocate() }
        try readPlane(i, into: raw)
        if pixel == .uint16 { return raw.bindMemory(to: UInt16.self).map { Float($0) } }
        return Array(raw.bindMemory(to: Float.self))
    }
}

extension OMETiffReader: RecordingReader {}

extension RecordingFormat {
    /// A reader of the recording (or plain TIFF) at `path`, by its suffix: an OME-Zarr store or a TIFF.
    public static func openReader(path: String) throws -> any RecordingReader {
        switch RecordingFormat(path: path) {
        case .omeTiff: try OMETiffReader(path: path)
        case .omeZarr: try OMEZarrReader(path: path)
        }
    }
}

/// Reads an OME-Zarr recording written by Moiré (`OMEZarrWriter`): level 0's chunks, one zstd
/// frame per plane; a chunk never written (a missing frame, a time point not reached) reads as 0,
/// as in zarr-python. Every chunk is checked before it is decompressed: a regular file no larger
/// than zstd's bound for one plane, whose frame declares exactly one plane's bytes.
public final class OMEZarrReader {
    public let path: String
    public let contents: OMEZarrContents
    public var width: Int { contents.layout.width }
    public var height: Int { contents.layout.height }
    public var pixel: PixelFormat { contents.layout.pixel }
    /// The planes of the time points written (whole time points; a closed store's summary says how many).
    public let planeCount: Int

    public init(path: String) throws {
        self.path = path
        contents = try OMEZarrContents.read(path: path)
        let layout = contents.layout
        guard layout.planeBytes <= Self.largestPlane else {
            throw MoireError(
                .format, "planes of \(layout.planeBytes) bytes; at most \(Self.largestPlane) are read", place: path)
        }
        // The time points that the plane log reaches (a closed store's summary says the same; a
        // store's attributes alone never make the reader take more planes than were logged).
        let perTimepoint = layout.planesPerTimepoint
        let logged = (contents.planes.count + perTimepoint - 1) / perTimepoint * perTimepoint
        planeCount = min(logged, layout.timepoints * perTimepoint)
    }

    public var layout: RecordingLayout? { contents.layout }
    /// The largest plane read: 1 GiB (a 16k × 16k float plane; cameras give far less).
    static let largestPlane = 1 << 30

    public func readPlane(_ i: Int, into out: UnsafeMutableRawBufferPointer) throws {
        guard i >= 0, i < planeCount else {
            throw MoireError(.format, "plane \(i) does not exist (\(planeCount) planes)", place: path)
        }
        let layout = contents.layout
        let bytes = layout.planeBytes
        guard out.count >= bytes, let base = out.baseAddress else {
            throw MoireError(.format, "buffer too small for plane \(i)", place: path)
        }
        let at = layout.coordinates(ofPlane: i)
        let channel = OMEZarrWriter.channelIndex(layout, c: at.c, angle: at.angle, phase: at.phase)
        let chunk = "\(path)/0/\(at.t)/\(channel)/\(at.z)/0/0"
        let bound = UInt64(ZSTD_compressBound(bytes))
        guard let data = try OMEZarrContents.contentsIfPresent(chunk, atMost: bound, what: "chunk (one plane)") else {
            base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            return
        }
        let declared = data.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        guard declared == UInt64(bytes) else {
            throw MoireError(.format, "the chunk is not one zstd-compressed plane of \(bytes) bytes", place: chunk)
        }
        let written = data.withUnsafeBytes { ZSTD_decompress(base, bytes, $0.baseAddress, $0.count) }
        guard ZSTD_isError(written) == 0, written == bytes else {
            throw MoireError(.format, "the chunk does not decompress to one plane", place: chunk)
        }
    }

    public func planeRecords() -> [PlaneRecord]? {
        // The plane log in plane order, one record per plane of the time points written; a plane
        // with no record (the log's torn or unwritten end) is one that was not acquired.
        var byIndex: [Int: PlaneRecord] = [:]
        for record in contents.planes where record.header.index >= 0 && record.header.index < planeCount {
            byIndex[record.header.index] = record
        }
        let layout = contents.layout
        return (0..<planeCount).map { i in
            if let record = byIndex[i] { return record }
            let at = layout.coordinates(ofPlane: i)
            let header = FrameHeader(
                stream: "raw", run: layout.run, seq: i, index: i, t: at.t, channel: layout.channels[at.c], c: at.c,
                angle: at.angle, phase: at.phase, z: at.z, width: layout.width, height: layout.height,
                pixel: layout.pixel, pixelSizeUm: layout.pixelSizeUm, exposureStartNs: 0, missing: true,
                state: DeviceState(pattern: -1, lasers: [], zUm: 0, exposureMs: 0))
            return PlaneRecord(header: header, acquired: false)
        }
    }
}

extension OMEZarrReader: RecordingReader {}
