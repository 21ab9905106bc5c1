import Foundation
import MoireCore
@testable import MoireStorage
import MoireTesting
import Testing

/// OME-Zarr recordings, read back by the PyPI packages a microscopist would use: zarr-python for the
/// pixels and ome-zarr-py for the NGFF metadata (make deps installs both).
@Suite struct OMEZarrTests {
    let dir = Fixtures.tempDir("omezarr")

    /// Runs the Python file `script` with `arguments`; its stdout, or the failure with stderr.
    private func python(_ script: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw MoireError(.io, "python3 failed: \(stderr.suffix(1500))")
        }
        return stdout
    }

    /// A SIM recording (3 angles × 3 phases folded into c) stopped in its second time point, with a
    /// missing frame: zarr reads every plane written bit for bit at full resolution and as 2×2
    /// means at level 1; the missing plane and the time point not reached read as 0; ome-zarr
    /// finds the multiscale image with its axes and physical scale; no temporary file is left.
    @Test func aRecordingReadsBackInZarrAndOMEZarr() throws {
        let l = layout(t: 2, w: 128, h: 128)
        let path = "\(dir)/run.ome.zarr"
        #expect(RecordingFormat(path: path) == .omeZarr)
        #expect(RecordingFormat.derivedPath(of: path, stream: "sr") == "\(dir)/run.sr.ome.zarr")
        let writer = try RecordingFormat.omeZarr.makeWriter(path: path, layout: l, logger: .init(label: "test"))
        let written = 13
        let missingPlane = 4
        for i in 0..<written {
            let (h, px) = plane(i, l, missing: i == missingPlane)
            try px.withUnsafeBytes { try writer.write(header: h, payload: $0) }
        }
        let summary = try writer.finish()
        #expect(summary.planes == 18 && summary.missing == 1 && summary.padded == 5 && summary.acquired == 12)
        let script = Fixtures.path("Tests/Data/omezarr/read_back.py")
        let out = try python(script, [path, "\(l.width)", "\(l.height)", "\(written)", "\(missingPlane)"])
        struct Seen: Decodable {
            var axes: [String]
            var levels: Int
            var scale1: [Double]
            var napariLayers: Int
            var napariLevels: Int
            var napariScale: [Double]
        }
        let seen = try JSONDecoder().decode(Seen.self, from: Data(out.utf8))
        #expect(seen.axes == ["t", "c", "z", "y", "x"] && seen.levels == 2)
        #expect(abs(seen.scale1[4] - 2 * l.pixelSizeUm) < 1e-12)
        // napari: one layer per channel (angles × phases here), both levels, positive scales (t, z, y, x).
        #expect(seen.napariLayers == 9 && seen.napariLevels == 2)
        #expect(seen.napariScale.count == 4 && seen.napariScale.allSatisfy { $0 > 0 })
        #expect(abs(seen.napariScale[3] - l.pixelSizeUm) < 1e-12)
        let leftovers = FileManager.default.enumerator(atPath: path)?.compactMap { $0 as? String }
            .filter { $0.contains(".writing") }
        #expect(leftovers == [])
        // One header per plane written, in order, the missing one flagged.
        let log = try String(contentsOfFile: OMEZarrWriter.planeLogPath(for: path), encoding: .utf8)
        let records = try log.split(separator: "\n").map { try JSONDecoder().decode(PlaneRecord.self, from: Data($0.utf8)) }
        #expect(records.map(\.header.index) == Array(0..<written))
        #expect(records.filter(\.header.missing).map(\.header.index) == [missingPlane])
        // What `moire inspect` reads: the layout, the plane records, closed cleanly; a torn last
        // line (a run killed while appending) is counted and left out.
        let contents = try OMEZarrContents.read(path: path)
        #expect(contents.layout == l && contents.planes.count == written && contents.summary == summary)
        let torn = try #require(FileHandle(forWritingAtPath: OMEZarrWriter.planeLogPath(for: path)))
        try torn.seekToEnd()
        try torn.write(contentsOf: Data("{\"header\": {\"run".utf8))
        try torn.close()
        let afterTear = try OMEZarrContents.read(path: path)
        #expect(afterTear.planes.count == written && afterTear.unreadableLines == 1)
    }

    /// A chunk write that cannot happen (the store's level folder replaced by a file) is an error
    /// naming the chunk; nothing half-written is left under the chunk's name.
    @Test func aChunkThatCannotBeWrittenIsNamed() throws {
        let l = layout(t: 1, w: 16, h: 8)
        let path = "\(dir)/blocked.ome.zarr"
        let writer = try OMEZarrWriter(path: path, layout: l)
        try FileManager.default.removeItem(atPath: "\(path)/0")
        try Data().write(to: URL(fileURLWithPath: "\(path)/0"))
        let (h, px) = plane(0, l)
        #expect {
            try px.withUnsafeBytes { try writer.write(header: h, payload: $0) }
        } throws: { error in
            "\(error)".contains("\(path)/0/0/0/0")
        }
        #expect(writer.planesWritten == 0)
    }

    /// The offline tools and the replay camera read a store as they read its OME-TIFF twin
    /// (`RecordingFormat.openReader`): the same planes, bit for bit, the same plane records; a missing
    /// frame reads as 0 in both; the time point the run stopped in is padded with planes that were
    /// not acquired, as the TIFF's are.
    @Test func aStoreReadsBackLikeItsOMETiffTwin() throws {
        let l = layout(t: 3, w: 64, h: 32)
        let written = 13
        let missingPlane = 4
        var readers: [any RecordingReader] = []
        for format in RecordingFormat.allCases {
            let path = "\(dir)/twin\(format.suffix)"
            let writer = try format.makeWriter(path: path, layout: l, logger: .init(label: "test"))
            for i in 0..<written {
                let (h, px) = plane(i, l, missing: i == missingPlane)
                try px.withUnsafeBytes { try writer.write(header: h, payload: $0) }
            }
            try writer.finish()
            readers.append(try RecordingFormat.openReader(path: path))
        }
        let (tiff, zarr) = (readers[0], readers[1])
        #expect(zarr is OMEZarrReader && tiff is OMETiffReader)
        #expect(zarr.planeCount == 18 && tiff.planeCount == zarr.planeCount)
        #expect(zarr.layout == tiff.layout && zarr.width == 64 && zarr.height == 32)
        for i in 0..<zarr.planeCount {
            #expect(try zarr.readPlaneFloat(i) == tiff.readPlaneFloat(i), "plane \(i)")
        }
        #expect(try zarr.readPlaneFloat(missingPlane).allSatisfy { $0 == 0 })
        #expect(try zarr.readPlaneFloat(3) == plane(3, l).1.map(Float.init))
        let zarrRecords = try #require(zarr.planeRecords())
        let tiffRecords = try #require(tiff.planeRecords())
        #expect(zarrRecords.map(\.acquired) == tiffRecords.map(\.acquired))
        #expect(zarrRecords.map(\.header.missing) == tiffRecords.map(\.header.missing))
        #expect(zarrRecords.map(\.header.angle) == tiffRecords.map(\.header.angle))
        #expect(zarrRecords.map(\.header.phase) == tiffRecords.map(\.header.phase))
        #expect(zarrRecords.prefix(written).map(\.header.state) == tiffRecords.prefix(written).map(\.header.state))
        #expect(zarrRecords.filter(\.acquired).count == written)
    }

    /// Crafted chunks are refused with the chunk named, before anything is decompressed into
    /// memory: one larger than zstd's bound for a plane, one whose frame declares another size,
    /// bytes that are not zstd, and a FIFO in a chunk's place (it would block a reader).
    @Test func craftedChunksAreRefusedWithTheChunkNamed() throws {
        let l = layout(t: 1, w: 16, h: 8)
        let path = "\(dir)/crafted.ome.zarr"
        let writer = try OMEZarrWriter(path: path, layout: l)
        for i in 0..<l.planesPerTimepoint {
            let (h, px) = plane(i, l)
            try px.withUnsafeBytes { try writer.write(header: h, payload: $0) }
        }
        try writer.finish()
        let reader = try OMEZarrReader(path: path)
        #expect(try reader.readPlaneFloat(0) == plane(0, l).1.map(Float.init))
        let chunk = "\(path)/0/0/0/0/0/0"
        func refused(_ why: String) {
            do {
                _ = try reader.readPlaneFloat(0)
                Issue.record("\(why): read without an error")
            } catch {
                #expect(error is MoireError && "\(error)".contains(chunk), "\(why): \(error)")
            }
        }
        try Data(repeating: 0x28, count: 4096).write(to: URL(fileURLWithPath: chunk))
        refused("larger than a compressed plane can be")
        // A valid chunk of a store whose planes are twice as wide.
        let wide = layout(t: 1, w: 2 * l.width, h: l.height)
        let widePath = "\(dir)/wide.ome.zarr"
        let wideWriter = try OMEZarrWriter(path: widePath, layout: wide)
        let (wideHeader, widePixels) = plane(0, wide)
        try widePixels.withUnsafeBytes { try wideWriter.write(header: wideHeader, payload: $0) }
        try FileManager.default.removeItem(atPath: chunk)
        try FileManager.default.copyItem(atPath: "\(widePath)/0/0/0/0/0/0", toPath: chunk)
        refused("a frame of two planes")
        try Data("not zstd at all".utf8).write(to: URL(fileURLWithPath: chunk))
        refused("not zstd")
        try FileManager.default.removeItem(atPath: chunk)
        #expect(mkfifo(chunk, 0o600) == 0)
        refused("a FIFO")
    }
}
