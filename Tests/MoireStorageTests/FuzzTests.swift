import Foundation
import MoireCore
import MoireStorage
import MoireTesting
import Testing

/// Structure-aware fuzzing of every file reader (the security issue's deliverable 5): OME-TIFF
/// (BigTIFF) with the recording index and recovery, MRC and PNG. Seeds are valid files; mutations
/// plant huge counts, offsets beyond the file and truncations. 0 crashes, 0 hangs, every refusal a
/// MoireError at its place. `make fuzz` runs 100 000 inputs per reader; the suite runs fewer.
@Suite(.serialized) struct ReaderFuzzTests {
    let dir = Fixtures.tempDir("reader-fuzz")

    func expectClean(_ report: Fuzzer.Report, seeds: Int) {
        print(report)
        #expect(report.unplacedErrors == 0, "\(report.unplacedExample ?? "")")
        #expect(report.hangs == 0)
        #expect(report.accepted >= seeds, "the seeds themselves must load: \(report)")
        #expect(report.refused > 0)
    }

    /// A small recording: 4 planes of 16×8 uint16 with its index.
    func recording() throws -> (tiff: [UInt8], index: [UInt8]) {
        let layout = RecordingLayout(
            run: "fuzz", name: "fuzz", mode: "sim2d", channels: ["gfp"], excitationNm: [488], emissionNm: [525],
            timepoints: 1, zPlanes: 1, angles: 2, phases: 2, width: 16, height: 8, pixel: .uint16, pixelSizeUm: 0.065,
            zStepUm: 0, objectiveNA: 1.4, magnification: 100, protocolFile: "/p.yaml", rigFile: "/r.yaml")
        let path = "\(dir)/seed.ome.tif"
        let writer = try OMETiffWriter(path: path, layout: layout)
        for i in 0..<4 {
            let header = FrameHeader(
                run: "fuzz", seq: i, index: i, t: 0, channel: "gfp", c: 0, angle: i / 2, phase: i % 2, z: 0,
                width: 16, height: 8, pixelSizeUm: 0.065)
            let pixels = (0..<128).map { UInt16($0 * (i + 1)) }
            try pixels.withUnsafeBytes { try writer.write(header: header, payload: $0) }
        }
        _ = try writer.finish()
        let tiff = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let index = try [UInt8](Data(contentsOf: URL(fileURLWithPath: RecordingIndex.path(for: path))))
        return (tiff, index)
    }

    @Test func omeTiffReaderSurvivesMutation() throws {
        let seed = try recording().tiff
        let file = "\(dir)/fuzz.ome.tif"
        var fuzzer = Fuzzer(seed: 0xF022_0101, maximumBytes: 256 * 1024)
        let report = fuzzer.campaign("ome-tiff", seeds: [seed], count: Fuzzer.inputCount(fallback: 1500)) { input in
            try Data(input).write(to: URL(fileURLWithPath: file))
            let reader = try OMETiffReader(path: file)
            for i in 0..<reader.planeCount { _ = try reader.readPlaneFloat(i) }
            _ = reader.planeRecords()
        }
        expectClean(report, seeds: 1)
    }

    @Test func recordingIndexAndRecoverySurviveMutation() throws {
        let (tiff, index) = try recording()
        let file = "\(dir)/damaged.ome.tif"
        try Data(tiff).write(to: URL(fileURLWithPath: file))
        var fuzzer = Fuzzer(seed: 0xF022_0102, maximumBytes: 256 * 1024)
        let report = fuzzer.campaign("index+recovery", seeds: [index], count: Fuzzer.inputCount(fallback: 800)) {
            input in
            try Data(input).write(to: URL(fileURLWithPath: RecordingIndex.path(for: file)))
            _ = try RecordingIndex.read(path: RecordingIndex.path(for: file))
            _ = try Recovery.recover(file, output: "\(dir)/recovered.ome.tif")
            try? FileManager.default.removeItem(atPath: "\(dir)/recovered.ome.tif")
            try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: "\(dir)/recovered.ome.tif"))
        }
        expectClean(report, seeds: 1)
    }

    /// An MRC file: 1024-byte header, `nz` planes of `nx × ny` in `mode`.
    func mrc(nx: Int32, ny: Int32, nz: Int32, mode: Int32) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 1024)
        func put(_ value: Int32, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { for k in 0..<4 { header[offset + k] = $0[k] } }
        }
        put(nx, at: 0)
        put(ny, at: 4)
        put(nz, at: 8)
        put(mode, at: 12)
        put(nx, at: 28)
        put(ny, at: 32)
        put(nz, at: 36)
        withUnsafeBytes(of: Float(nx) * 0.0626 * 10) { for k in 0..<4 { header[40 + k] = $0[k] } }
        header[208] = 0x4D  // "MAP "
        header[209] = 0x41
        header[210] = 0x50
        header[211] = 0x20
        header[212] = 0x44
        header[213] = 0x44
        let bytesPerPixel = [0: 1, 1: 2, 2: 4, 4: 8, 6: 2][Int(mode)] ?? 2
        let body = (0..<(Int(nx * ny * nz) * bytesPerPixel)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        return header + body
    }

    @Test func mrcReaderSurvivesMutation() throws {
        let seeds = [mrc(nx: 16, ny: 8, nz: 3, mode: 1), mrc(nx: 8, ny: 8, nz: 2, mode: 2), mrc(nx: 9, ny: 16, nz: 1, mode: 4)]
        let file = "\(dir)/fuzz.mrc"
        var fuzzer = Fuzzer(seed: 0xF022_0103, maximumBytes: 64 * 1024)
        let report = fuzzer.campaign("mrc", seeds: seeds, count: Fuzzer.inputCount(fallback: 1500)) { input in
            try Data(input).write(to: URL(fileURLWithPath: file))
            _ = try ImageImport.loadMRC(file)
        }
        expectClean(report, seeds: seeds.count)
    }

    @Test func pngReaderSurvivesMutation() throws {
        let gray = PNGWriter.encode(width: 16, height: 8, pixels: (0..<128).map { UInt8($0) })
        let seeds = [[UInt8](gray)]
        let file = "\(dir)/fuzz.png"
        var fuzzer = Fuzzer(seed: 0xF022_0104, maximumBytes: 64 * 1024)
        let report = fuzzer.campaign("png", seeds: seeds, count: Fuzzer.inputCount(fallback: 1500)) { input in
            try Data(input).write(to: URL(fileURLWithPath: file))
            _ = try PNGImport.load(file)
        }
        expectClean(report, seeds: seeds.count)
    }
}
