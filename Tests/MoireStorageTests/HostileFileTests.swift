import Foundation
import MoireCore
import MoireStorage
import MoireTesting
import Testing

/// Crafted and odd files: every reader answers with a clear error naming the file, never a crash,
/// a huge allocation or a hang.
@Suite struct HostileFileTests {
    let dir = Fixtures.tempDir("hostile")

    func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    /// A 232-byte classic TIFF whose one directory claims a plane of width × height 16-bit pixels,
    /// uncompressed, in one strip of the claimed size.
    func craftedTIFF(width: UInt32, height: UInt32, samplesPerPixel: UInt32 = 1) -> Data {
        var d: [UInt8] = Array("II".utf8) + littleEndian(UInt16(42)) + littleEndian(UInt32(8))
        let entries: [(UInt16, UInt16, UInt32, UInt32)] = [
            (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 200), (277, 3, 1, samplesPerPixel), (278, 4, 1, height),
            (279, 4, 1, width &* height &* 2 &* samplesPerPixel),
        ]
        d += littleEndian(UInt16(entries.count))
        for (tag, type, count, value) in entries {
            d += littleEndian(tag) + littleEndian(type) + littleEndian(count)
            d += type == 3 ? littleEndian(UInt16(value)) + [0, 0] : littleEndian(value)
        }
        d += littleEndian(UInt32(0))
        d += [UInt8](repeating: 7, count: 200 - d.count + 16)
        return Data(d)
    }

    @Test func aSmallTIFFClaimingGigabytesIsRefusedBeforeAnyAllocation() throws {
        let path = "\(dir)/huge.tif"
        try craftedTIFF(width: 20_000, height: 20_000).write(to: URL(fileURLWithPath: path))
        do {
            _ = try OMETiffReader(path: path)
            Issue.record("a 232-byte file claiming 800 MB of pixels was opened")
        } catch let error as MoireError {
            #expect(error.place == path && error.message.contains("claims"), "\(error)")
        }
        // The same writer with a size that fits is read (the check refuses only what cannot be there).
        let small = "\(dir)/small.tif"
        try craftedTIFF(width: 4, height: 2).write(to: URL(fileURLWithPath: small))
        let reader = try OMETiffReader(path: small)
        #expect(reader.width == 4 && reader.height == 2 && reader.planeCount == 1)
    }

    /// A TIFF of four samples per pixel (what tifffile makes of a four-frame stack unless told the
    /// frames are grayscale) is refused with the file's name and how to save a stack instead.
    @Test func aMultiSampleTIFFIsRefusedWithHowToSaveAStack() throws {
        let path = "\(dir)/four-samples.tif"
        try craftedTIFF(width: 4, height: 2, samplesPerPixel: 4).write(to: URL(fileURLWithPath: path))
        do {
            _ = try OMETiffReader(path: path)
            Issue.record("a four-sample TIFF was opened as grayscale")
        } catch let error as MoireError {
            #expect(error.place == path, "\(error)")
            #expect(error.message.contains("4 samples per pixel") && error.message.contains("minisblack"), "\(error)")
        }
    }

    @Test func aFIFOIsRefusedInsteadOfBlocking() throws {
        let fifo = "\(dir)/pipe.ome.tif"
        #expect(mkfifo(fifo, 0o600) == 0)
        for open in [{ _ = try OMETiffReader(path: fifo) }, { _ = try RecordingIndex.read(path: fifo) }] {
            do {
                try open()
                Issue.record("a FIFO was opened")
            } catch let error as MoireError {
                #expect(error.message.contains("not a regular file") && error.place == fifo, "\(error)")
            }
        }
    }

    @Test func absurdLayoutDimensionsAreRejected() throws {
        var l = layout()
        l.width = 1 << 40
        #expect(throws: MoireError.self) { try l.validated() }
        l = layout()
        l.timepoints = 1 << 62
        l.zPlanes = 1 << 20
        #expect(throws: MoireError.self) { try l.validated() }
        #expect(try layout().validated() == layout())
    }

    /// An index record (checksums intact) naming pixels far outside the file: recovery stops there
    /// with the planes before it, and says so.
    @Test func recoveryRefusesIndexRecordsOutsideTheFile() throws {
        let l = layout()
        let path = "\(dir)/rec.ome.tif"
        let writer = try OMETiffWriter(path: path, layout: l)
        for i in 0..<4 { let (h, px) = plane(i, l); try px.withUnsafeBytes { try writer.write(header: h, payload: $0) } }
        var index = try Data(contentsOf: URL(fileURLWithPath: RecordingIndex.path(for: path)))
        var next = try RecordingIndex.read(path: RecordingIndex.path(for: path)).entries[3].plane
        next.header.index = 4
        let json = try JSONEncoder().encode(next)
        for (offset, bytes) in [(UInt64.max - 10, UInt64(l.planeBytes)), (UInt64(64), UInt64.max), (UInt64(64), UInt64(1) << 40)] {
            var record = Data(littleEndian(UInt32(0x5246_524D)) + littleEndian(UInt32(json.count)) + littleEndian(offset) + littleEndian(bytes))
            record.append(contentsOf: littleEndian(UInt32(0)))
            record.append(json)
            record.append(contentsOf: littleEndian(CRC32.checksum(record)))
            let crafted = "\(dir)/crafted-\(offset % 1000)-\(bytes % 1000).ome.tif"
            try FileManager.default.copyItem(atPath: path, toPath: crafted)
            var craftedIndex = index
            craftedIndex.append(record)
            try craftedIndex.write(to: URL(fileURLWithPath: RecordingIndex.path(for: crafted)))
            let report = try Recovery.recover(crafted)
            #expect(report.recovered == 4 && report.corrupt == 1, "offset \(offset), bytes \(bytes): \(report)")
        }
        index.removeAll()
    }
}
