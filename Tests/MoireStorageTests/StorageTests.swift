import Foundation
import MoireCore
@testable import MoireStorage
import MoireTesting
import Testing

func layout(t: Int = 2, w: Int = 16, h: Int = 8) -> RecordingLayout {
    RecordingLayout(run: "run-x", name: "test", mode: "sim2d", channels: ["gfp"], excitationNm: [488], emissionNm: [525],
                    timepoints: t, zPlanes: 1, angles: 3, phases: 3, width: w, height: h, pixel: .uint16, pixelSizeUm: 0.065,
                    zStepUm: 0, objectiveNA: 1.49, magnification: 100, protocolFile: "/p.yaml", rigFile: "/r.yaml")
}

func plane(_ i: Int, _ l: RecordingLayout, missing: Bool = false) -> (FrameHeader, [UInt16]) {
    let c = l.coordinates(ofPlane: i)
    let h = FrameHeader(run: l.run, seq: i, index: i, t: c.t, channel: "gfp", c: 0, angle: c.angle, phase: c.phase, z: 0,
                        width: l.width, height: l.height, pixelSizeUm: l.pixelSizeUm, exposureStartNs: Int64(i) * 1_000_000,
                        missing: missing, state: DeviceState(pattern: c.angle * 3 + c.phase, lasers: ["l488"], zUm: 0, exposureMs: 5))
    let px = (0..<(l.width * l.height)).map { UInt16(truncatingIfNeeded: $0 * 7 + i * 131) }
    return (h, px)
}

@Suite struct RecordingTests {
    let dir = Fixtures.tempDir("storage")

    /// DeltaT keeps the exposure start to the nanosecond however long the run (`%.6g` kept 1 ms after 100 s).
    @Test func deltaTKeepsNanosecondsLateInALongRun() throws {
        var l = layout(t: 1)
        l.startedNs = 1_795_316_000_123_000_000
        let path = "\(dir)/late.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        let starts: [Int64] = [0, 5, 123_456_789_012, 4_000_000_000_001, 7, 8, 9, 10, 11]
        for i in 0..<9 {
            var (h, px) = plane(i, l)
            h.exposureStartNs = starts[i]
            try px.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        _ = try w.finish()
        let xml = try #require(try OMETiffReader(path: path).description)
        // The run's start as OME's AcquisitionDate; SIM named as such for Bio-Formats and OMERO.
        #expect(xml.contains("<AcquisitionDate>2026-11-22T") && xml.contains(".123Z</AcquisitionDate>"), "\(xml.prefix(600))")
        #expect(xml.contains("AcquisitionMode=\"StructuredIllumination\" IlluminationType=\"Epifluorescence\""))
        for expected in ["DeltaT=\"0.000000000\"", "DeltaT=\"0.000000005\"", "DeltaT=\"123.456789012\"", "DeltaT=\"4000.000000001\""] {
            #expect(xml.contains(expected), "\(expected)")
        }
    }

    /// The instrument a recording names: its lasers and detector in OME's Instrument, each channel's
    /// laser attenuated to the power asked and the detector's settings, the SIM geometry per
    /// orientation in an annotation; and the whole description read back with the layout.
    @Test func theInstrumentIsDescribedAndReadBack() throws {
        var l = layout(t: 1)
        let angle = RecordingInstrument.PatternAngle(kx: 3, ky: 4, phasesRad: [0, 2.1, 4.2], modulation: 0.8)
        l.instrument = RecordingInstrument(
            lasers: [
                .init(name: "l405", model: "Laser <405>", wavelengthNm: 405, maxPowerMw: 100),
                .init(name: "l488", model: "Laser 488", wavelengthNm: 488, maxPowerMw: 200),
            ],
            channelLaser: [1], channelPowerMw: [50],
            detector: .init(model: "sCMOS", gainADUPerE: 0.5, offsetADU: 100, readNoiseE: 1.5, binning: 2),
            patterns: [[angle, angle, angle]])
        let path = "\(dir)/instrument.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        for i in 0..<9 {
            let (h, px) = plane(i, l)
            try px.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        _ = try w.finish()
        let reader = try OMETiffReader(path: path)
        let xml = try #require(reader.description)
        #expect(xml.contains("<Laser ID=\"LightSource:0:0\" Model=\"Laser &lt;405&gt;\" Power=\"100\""))
        #expect(xml.contains("<Laser ID=\"LightSource:0:1\""))
        #expect(xml.contains("<LightSourceSettings ID=\"LightSource:0:1\" Attenuation=\"0.75\" Wavelength=\"488\""))
        #expect(xml.contains("<DetectorSettings ID=\"Detector:0:0\" Offset=\"100\" Gain=\"0.5\" Binning=\"2x2\"/>"))
        #expect(xml.contains("<M K=\"gfp.angle2\">periodUm=0.2 orientationDeg=53.1301 kx=3 ky=4"), "\(xml)")
        #expect(reader.layout?.instrument == l.instrument)
    }

    @Test func writtenRecordingReadsBackWithOMEDimensionsAndPlaneMetadata() throws {
        let l = layout()
        let path = "\(dir)/rec.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        for i in 0..<18 {
            let (h, px) = plane(i, l, missing: i == 4)
            try px.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        let s = try w.finish()
        #expect(s.planes == 18 && s.missing == 1 && s.padded == 0 && s.timepoints == 2)
        let r = try OMETiffReader(path: path)
        #expect(r.planeCount == 18 && r.width == 16 && r.height == 8 && r.pixel == .uint16)
        let xml = try #require(r.description)
        #expect(xml.contains("SizeZ=\"9\"") && xml.contains("SizeT=\"2\"") && xml.contains("PhysicalSizeX=\"0.065\""))
        #expect(xml.contains("ModuloAlongZ"))
        let recs = try #require(r.planeRecords())
        #expect(recs[13].header.angle == 1 && recs[13].header.phase == 1 && recs[13].header.t == 1)
        #expect(recs[4].header.missing && !recs[5].header.missing)
        let p7 = try r.readPlaneFloat(7)
        #expect(p7 == plane(7, l).1.map(Float.init))
        #expect(try r.readPlaneFloat(4).allSatisfy { $0 == 0 })
        #expect(try RecordingIndex.read(path: RecordingIndex.path(for: path)).closed)
    }

    /// The layout and plane records are read back by an XML parser: characters that XML escapes
    /// (in a protocol path, a run name) come back as written, once unescaped, never twice.
    @Test func layoutWithXMLSpecialCharactersReadsBackExactly() throws {
        var l = layout()
        l.name = "a & b <c> \"d\" &amp; e"
        l.protocolFile = "/data/x&y<z>.yaml"
        let path = "\(dir)/escaped.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        for i in 0..<18 {
            let (h, px) = plane(i, l)
            try px.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        _ = try w.finish()
        let r = try OMETiffReader(path: path)
        let back = try #require(r.layout)
        #expect(back.name == l.name && back.protocolFile == l.protocolFile)
        #expect(try #require(r.planeRecords()).count == 18)
    }

    @Test func stopMidTimepointPadsAndFlagsNotAcquired() throws {
        let l = layout()
        let path = "\(dir)/partial.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        for i in 0..<11 { let (h, px) = plane(i, l); try px.withUnsafeBytes { try w.write(header: h, payload: $0) } }
        let s = try w.finish()
        #expect(s.planes == 18 && s.padded == 7 && s.acquired == 11)
        let recs = try #require(OMETiffReader(path: path).planeRecords())
        #expect(recs.filter { !$0.acquired }.count == 7)
    }

    @Test func outOfOrderAndWrongSizePlanesAreRejected() throws {
        let l = layout()
        let w = try OMETiffWriter(path: "\(dir)/bad.ome.tif", layout: l)
        let (h, px) = plane(1, l)
        #expect(throws: MoireError.self) { try px.withUnsafeBytes { try w.write(header: h, payload: $0) } }
        let (h0, _) = plane(0, l)
        #expect(throws: MoireError.self) { try [UInt16](repeating: 0, count: 3).withUnsafeBytes { try w.write(header: h0, payload: $0) } }
    }

    /// A kill at any instant: copy the files as they are mid-recording (what a kill -9 leaves), tear the
    /// index's last record, and recover.
    @Test func recoveryKeepsEveryCompleteFrameAndNothingElse() throws {
        let l = layout(t: 3)
        let path = "\(dir)/live.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        for i in 0..<13 { let (h, px) = plane(i, l); try px.withUnsafeBytes { try w.write(header: h, payload: $0) } }
        let killed = "\(dir)/killed.ome.tif"
        try FileManager.default.copyItem(atPath: path, toPath: killed)
        var index = try Data(contentsOf: URL(fileURLWithPath: RecordingIndex.path(for: path)))
        index.removeLast(5)  // torn last record: plane 12 is not known complete
        try index.write(to: URL(fileURLWithPath: RecordingIndex.path(for: killed)))
        let rep = try Recovery.recover(killed)
        #expect(rep.recovered == 12 && !rep.indexWasClosed)
        let r = try OMETiffReader(path: rep.summary.path)
        let recs = try #require(r.planeRecords())
        #expect(recs.filter(\.acquired).count == 12)
        for i in 0..<12 { #expect(try r.readPlaneFloat(i) == plane(i, l).1.map(Float.init)) }
    }

    @Test func recoveryStopsAtPixelsThatFailTheirChecksum() throws {
        let l = layout()
        let path = "\(dir)/torn.ome.tif"
        let w = try OMETiffWriter(path: path, layout: l)
        for i in 0..<5 { let (h, px) = plane(i, l); try px.withUnsafeBytes { try w.write(header: h, payload: $0) } }
        let killed = "\(dir)/torn-killed.ome.tif"
        try FileManager.default.copyItem(atPath: path, toPath: killed)
        try FileManager.default.copyItem(atPath: RecordingIndex.path(for: path), toPath: RecordingIndex.path(for: killed))
        let entries = try RecordingIndex.read(path: RecordingIndex.path(for: killed)).entries
        let fh = try #require(FileHandle(forUpdatingAtPath: killed))
        try fh.seek(toOffset: entries[3].offset + 10)
        try fh.write(contentsOf: Data([0xFF, 0xEE]))
        try fh.close()
        let rep = try Recovery.recover(killed)
        #expect(rep.recovered == 3 && rep.corrupt == 1)
    }

    @Test func indexReaderSurvivesRandomBytes() throws {
        var rng = SystemRandomNumberGenerator()
        let good = "\(dir)/fuzz.idx"
        let l = layout()
        let w = try OMETiffWriter(path: "\(dir)/fuzz.ome.tif", layout: l)
        for i in 0..<3 { let (h, px) = plane(i, l); try px.withUnsafeBytes { try w.write(header: h, payload: $0) } }
        let base = try Data(contentsOf: URL(fileURLWithPath: RecordingIndex.path(for: "\(dir)/fuzz.ome.tif")))
        for _ in 0..<300 {
            var d = base
            for _ in 0..<Int.random(in: 1...8, using: &rng) { d[Int.random(in: 0..<d.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            d = d.prefix(Int.random(in: 0...d.count, using: &rng))
            try d.write(to: URL(fileURLWithPath: good))
            if let c = try? RecordingIndex.read(path: good) { #expect(c.entries.count <= 3) }
        }
    }

    @Test func notATIFFGivesAClearError() throws {
        let p = Fixtures.write("hello", to: "not.tif", in: dir)
        #expect(throws: MoireError.self) { try OMETiffReader(path: p) }
        #expect(throws: MoireError.self) { try Recovery.recover(p) }
    }
}

@Suite struct ImportTests {
    @Test func realMRCDataImports() throws {
        guard let data = Fixtures.sharedData else { return }
        let s = try ImageImport.loadMRC("\(data)/rdl-sim-microtubules/raw-3x3-microtubules.mrc")
        #expect(s.width == 256 && s.height == 256 && s.planes.count == 9)
        #expect(abs((s.pixelSizeUm ?? 0) - 0.0626) < 1e-4)
        let otf = try ImageImport.loadMRC("\(data)/rdl-sim-microtubules/otf-tirf488-radial.mrc")
        #expect(otf.isComplex && otf.width == 257)
        #expect(abs(otf.planes[0][0] - 1) < 1e-3)
    }

    @Test func truncatedMRCIsRejected() throws {
        let dir = Fixtures.tempDir("mrc")
        var d = Data(count: 1024)
        d.withUnsafeMutableBytes { b in
            b.storeBytes(of: Int32(16), toByteOffset: 0, as: Int32.self)
            b.storeBytes(of: Int32(16), toByteOffset: 4, as: Int32.self)
            b.storeBytes(of: Int32(2), toByteOffset: 8, as: Int32.self)
            b.storeBytes(of: Int32(6), toByteOffset: 12, as: Int32.self)
        }
        d.append(Data(count: 100))
        try d.write(to: URL(fileURLWithPath: "\(dir)/t.mrc"))
        do { _ = try ImageImport.loadMRC("\(dir)/t.mrc"); Issue.record("accepted") } catch let e as MoireError {
            #expect(e.message.contains("truncated"))
        }
    }

    @Test func plainTIFFStackImports() throws {
        let dir = Fixtures.tempDir("tiffimport")
        let l = layout(t: 1)
        let w = try OMETiffWriter(path: "\(dir)/s.tif", layout: l)
        for i in 0..<9 { let (h, px) = plane(i, l); try px.withUnsafeBytes { try w.write(header: h, payload: $0) } }
        try w.finish()
        let s = try ImageImport.load("\(dir)/s.tif")
        #expect(s.planes.count == 9 && s.width == 16 && s.pixelSizeUm == 0.065)
    }
}

/// PNG import against files zlib's own encoder wrote (Tests/Data/png/make_fixtures.py: dynamic and fixed
/// Huffman blocks, every row filter, IDAT split in two), with the pixel formula as the reference.
@Suite struct PNGImportTests {
    func expected(_ w: Int, _ h: Int, bits: Int, colour: Bool) -> [Float] {
        (0..<(w * h)).map { i in
            let x = i % w, y = i / w
            let v = (x * 37 + y * 101 + x * y) % (1 << bits)
            return colour ? Float(v + v / 2 + v / 4) / 3 : Float(v)
        }
    }

    @Test func greyscale16BitDynamicHuffmanAnd8BitFixedHuffmanAndColourDecodeExactly() throws {
        let g16 = try ImageImport.load(Fixtures.path("Tests/Data/png/grey16-dynamic.png"))
        #expect(g16.width == 40 && g16.height == 30 && g16.planes.count == 1)
        #expect(g16.planes[0] == expected(40, 30, bits: 16, colour: false))
        let g8 = try ImageImport.load(Fixtures.path("Tests/Data/png/grey8-fixed.png"))
        #expect(g8.width == 33 && g8.height == 17 && g8.planes[0] == expected(33, 17, bits: 8, colour: false))
        let rgb = try ImageImport.load(Fixtures.path("Tests/Data/png/rgb8-dynamic.png"))
        #expect(rgb.planes[0] == expected(20, 12, bits: 8, colour: true))
    }

    @Test func aFolderOfPNGsIsAStackInNameOrder() throws {
        let dir = Fixtures.tempDir("pngstack")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("Tests/Data/png/grey8-fixed.png")))
        try src.write(to: URL(fileURLWithPath: dir + "/b.png"))
        // Our own writer's PNG of another image of the same size, first by name.
        let other = (0..<(33 * 17)).map { UInt8($0 % 251) }
        try PNGWriter.encode(width: 33, height: 17, pixels: other).write(to: URL(fileURLWithPath: dir + "/a.png"))
        let s = try ImageImport.load(dir)
        #expect(s.planes.count == 2)
        #expect(s.planes[0] == other.map(Float.init))
        #expect(s.planes[1] == expected(33, 17, bits: 8, colour: false))
    }

    /// CRC-32 against the standard's check value, in one piece and in two (the index chains it).
    @Test func crc32GivesTheStandardCheckValue() {
        let digits = Data("123456789".utf8)
        #expect(CRC32.checksum(digits) == 0xCBF4_3926)
        let head = digits.prefix(4).withUnsafeBytes { CRC32.checksum($0) }
        let whole = digits.dropFirst(4).withUnsafeBytes { CRC32.checksum($0, seed: head) }
        #expect(whole == 0xCBF4_3926)
        #expect(CRC32.checksum(Data()) == 0)
    }

    /// The writer's image data is compressed (a smooth preview shrinks far below its raw size) and
    /// reads back pixel for pixel; image data that inflates past its size is refused.
    @Test func pngImageDataIsCompressedAndReadsBackExactly() throws {
        let (w, h) = (256, 128)
        let pixels = (0..<(w * h)).map { UInt8(($0 % w + $0 / w) / 2) }
        let png = PNGWriter.encode(width: w, height: h, pixels: pixels)
        #expect(png.count < w * h / 4, "\(png.count) bytes for \(w * h) pixels")
        let back = try PNGImport.decode(png, place: "p.png")
        #expect(back.width == w && back.height == h && back.planes[0] == pixels.map(Float.init))
        let tooMuch = PNGWriter.deflated(Data(count: 10 * (w + 1) * h))
        #expect(throws: MoireError.self) { try Inflate.zlib([UInt8](tooMuch), expected: (w + 1) * h, place: "p.png") }
    }

    @Test func damagedAndTruncatedPNGsAreRefusedWithTheirPlace() throws {
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("Tests/Data/png/grey16-dynamic.png"))))
        var flipped = good
        flipped[60] ^= 0x40  // inside the first IDAT: its CRC fails
        #expect(throws: MoireError.self) { try PNGImport.decode(Data(flipped), place: "x.png") }
        for cut in [7, 20, 40, good.count / 2, good.count - 13] {
            #expect(throws: MoireError.self) { try PNGImport.decode(Data(good[0..<cut]), place: "x.png") }
        }
        do { _ = try PNGImport.decode(Data(flipped), place: "x.png") } catch let e as MoireError {
            #expect("\(e)".contains("x.png") && "\(e)".contains("CRC"))
        }
        // Random bytes after a valid signature never crash the decoder.
        var r = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var junk = Array(good[0..<8]) + (0..<Int.random(in: 0..<300, using: &r)).map { _ in UInt8.random(in: 0...255, using: &r) }
            if junk.count > 20 { junk[11] = 13 }
            _ = try? PNGImport.decode(Data(junk), place: "junk.png")
        }
    }
}
