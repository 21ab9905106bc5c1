import CTIFF
import Foundation
import FoundationXML
import MoireCore

/// Reads TIFF and OME-TIFF files written by Moiré or by other programs, plane by plane.
public final class OMETiffReader {
    public let path: String
    private let tif: OpaquePointer
    public let width: Int
    public let height: Int
    public let pixel: PixelFormat
    public let bitsPerSample: Int
    public let planeCount: Int
    /// ImageDescription of the first IFD (OME-XML for OME-TIFF).
    public let description: String?
    /// The key–value pairs of the OME-XML's map annotations (`<M K="key">value</M>`, where Moiré
    /// keeps its layout and per-plane records), read in one pass by an XML parser; empty for
    /// other files and for a description that is not well-formed XML.
    private lazy var annotations: [String: String] = description.map(MapAnnotationReader.read) ?? [:]

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw MoireError(.io, "no such file", place: path) }
        let fileSize = try InputFile.size(path)
        tif = try TIFFCall.open(path, mode: "r")
        var w: UInt32 = 0
        var h: UInt32 = 0
        var bps: UInt16 = 0
        var spp: UInt16 = 1
        var fmt: UInt16 = UInt16(SAMPLEFORMAT_UINT)
        guard moire_tiff_get_u32(tif, UInt32(TIFFTAG_IMAGEWIDTH), &w) != 0,
            moire_tiff_get_u32(tif, UInt32(TIFFTAG_IMAGELENGTH), &h) != 0
        else {
            TIFFClose(tif)
            throw MoireError(.format, "TIFF has no image size", place: path)
        }
        _ = moire_tiff_get_u16(tif, UInt32(TIFFTAG_BITSPERSAMPLE), &bps)
        _ = moire_tiff_get_u16(tif, UInt32(TIFFTAG_SAMPLESPERPIXEL), &spp)
        _ = moire_tiff_get_u16(tif, UInt32(TIFFTAG_SAMPLEFORMAT), &fmt)
        guard spp == 1 else {
            TIFFClose(tif);
            throw MoireError(
                .format,
                "only single-sample (grayscale) TIFFs are supported; this one has \(spp) samples per pixel"
                    + " (frames of a stack belong on pages of their own: tifffile writes a stack of 3 or 4"
                    + " frames as colour samples unless told photometric='minisblack')",
                place: path)
        }
        switch (bps, Int32(fmt)) {
        case (8, SAMPLEFORMAT_UINT), (16, SAMPLEFORMAT_UINT): pixel = .uint16
        case (32, SAMPLEFORMAT_IEEEFP): pixel = .float32
        default:
            TIFFClose(tif)
            throw MoireError(
                .format,
                "unsupported pixel type: \(bps)-bit, sample format \(fmt); expected 8/16-bit unsigned or 32-bit float",
                place: path)
        }
        width = Int(w); height = Int(h); bitsPerSample = Int(bps)
        var desc: UnsafePointer<CChar>?
        description =
            moire_tiff_get_string(tif, UInt32(TIFFTAG_IMAGEDESCRIPTION), &desc) != 0
            ? desc.map { String(cString: $0) } : nil
        planeCount = Int(TIFFNumberOfDirectories(tif))
        // The pixels the file claims must fit in it: uncompressed, byte for byte; compressed, at
        // most 1032:1 (deflate's limit). A small crafted file cannot make a reader allocate gigabytes.
        var compression: UInt16 = UInt16(COMPRESSION_NONE)
        _ = moire_tiff_get_u16(tif, UInt32(TIFFTAG_COMPRESSION), &compression)
        let storedBytesPerPixel = max(1, Int(bps) / 8)
        let (pixels, overflowPixels) = Int(w).multipliedReportingOverflow(by: Int(h))
        let (planeBytes, overflowPlane) = pixels.multipliedReportingOverflow(by: storedBytesPerPixel)
        let (claimed, overflowTotal) = planeBytes.multipliedReportingOverflow(by: max(planeCount, 1))
        let ratio: UInt64 = compression == UInt16(COMPRESSION_NONE) ? 1 : 1032
        let (room, overflowRoom) = fileSize.multipliedReportingOverflow(by: ratio)
        guard w > 0, h > 0, !overflowPixels, !overflowPlane, !overflowTotal,
            overflowRoom || UInt64(claimed) <= room
        else {
            // Every stored property is set: the deinit closes the file.
            throw MoireError(
                .format,
                "the file (\(fileSize) bytes) claims \(planeCount) planes of \(w)×\(h) \(bps)-bit pixels, more than it can hold; truncated or not a valid TIFF",
                place: path)
        }
    }

    deinit { TIFFClose(tif) }

    /// Plane `i` as native pixels (`pixel` format: 8-bit data is widened to uint16).
    public func readPlane(_ i: Int, into out: UnsafeMutableRawBufferPointer) throws {
        guard i >= 0, i < planeCount else {
            throw MoireError(.format, "plane \(i) does not exist (\(planeCount) planes)", place: path)
        }
        let bytes = width * height * pixel.bytesPerPixel
        guard out.count >= bytes else { throw MoireError(.format, "buffer too small for plane \(i)", place: path) }
        try TIFFCall.check(TIFFSetDirectory(tif, tdir_t(i)), "selecting plane \(i)", path: path)
        var w: UInt32 = 0
        var h: UInt32 = 0
        _ = moire_tiff_get_u32(tif, UInt32(TIFFTAG_IMAGEWIDTH), &w)
        _ = moire_tiff_get_u32(tif, UInt32(TIFFTAG_IMAGELENGTH), &h)
        guard Int(w) == width, Int(h) == height else {
            throw MoireError(.format, "plane \(i) is \(w)×\(h); the first plane is \(width)×\(height)", place: path)
        }
        let lineBytes = Int(TIFFScanlineSize(tif))
        let line = UnsafeMutableRawPointer.allocate(byteCount: max(lineBytes, 1), alignment: 16)
        defer { line.deallocate() }
        for row in 0..<height {
            try TIFFCall.check(TIFFReadScanline(tif, line, UInt32(row), 0), "reading plane \(i) row \(row)", path: path)
            let dst = out.baseAddress! + row * width * pixel.bytesPerPixel
            if bitsPerSample == 8 {
                let src = line.assumingMemoryBound(to: UInt8.self)
                let d = dst.assumingMemoryBound(to: UInt16.self)
                for x in 0..<width { d[x] = UInt16(src[x]) }
            } else {
                dst.copyMemory(from: line, byteCount: width * pixel.bytesPerPixel)
            }
        }
    }

    /// The recording layout, for files written by Moiré.
    public var layout: RecordingLayout? {
        guard let json = annotations["layout"] else { return nil }
        return try? JSONDecoder().decode(RecordingLayout.self, from: Data(json.utf8)).validated()
    }

    /// Per-plane records from a Moiré OME-XML (nil for other files).
    public func planeRecords() -> [PlaneRecord]? {
        guard let layout else { return nil }
        var out: [PlaneRecord] = []
        for i in 0..<planeCount {
            guard let v = annotations["plane\(i)"] else { return nil }
            var kv: [String: String] = [:]
            for part in v.split(separator: " ") {
                let p = part.split(separator: "=", maxSplits: 1)
                kv[String(p[0])] = p.count > 1 ? String(p[1]) : ""
            }
            let c = Int(kv["c"] ?? "") ?? 0
            let lasers = (kv["lasers"] ?? "").split(separator: ",").map(String.init)
            let status = kv["status"] ?? "ok"
            let h = FrameHeader(
                stream: "raw", run: layout.run, seq: Int(kv["seq"] ?? "") ?? i, index: Int(kv["index"] ?? "") ?? i,
                t: Int(kv["t"] ?? "") ?? 0, channel: c < layout.channels.count ? layout.channels[c] : "c\(c)", c: c,
                angle: Int(kv["angle"] ?? "") ?? 0, phase: Int(kv["phase"] ?? "") ?? 0, z: Int(kv["z"] ?? "") ?? 0,
                width: width, height: height, pixel: pixel, pixelSizeUm: layout.pixelSizeUm,
                exposureStartNs: Int64(kv["startNs"] ?? "") ?? 0, missing: status != "ok",
                state: DeviceState(
                    pattern: Int(kv["pattern"] ?? "") ?? -1, lasers: lasers,
                    zUm: Double(kv["zUm"] ?? "") ?? 0, exposureMs: Double(kv["exposureMs"] ?? "") ?? 0))
            var record = PlaneRecord(header: h, acquired: status != "not-acquired")
            record.header.missingReason = kv["lost"].flatMap(MissingReason.init(rawValue:))
            out.append(record)
        }
        return out
    }
}

/// Collects the `<M K="key">value</M>` pairs of an OME-XML document (FoundationXML's event parser:
/// entities are decoded by the parser, external entities are never resolved).
private final class MapAnnotationReader: NSObject, XMLParserDelegate {
    private var pairs: [String: String] = [:]
    private var key: String?
    private var value = ""

    static func read(_ xml: String) -> [String: String] {
        let reader = MapAnnotationReader()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.shouldResolveExternalEntities = false
        parser.delegate = reader
        // A document that is not well-formed keeps what was read before the error; a Moiré
        // recording's is always well-formed, so a missing key then reads as "not Moiré's".
        _ = parser.parse()
        return reader.pairs
    }

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        guard elementName == "M", let k = attributes["K"] else { return }
        key = k
        value = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if key != nil { value += string }
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        guard elementName == "M", let k = key else { return }
        pairs[k] = value
        key = nil
    }
}
