import Foundation
import MoireCore

/// A plain stack of 2D planes as float32, for the offline commands.
public struct ImageStack: Sendable {
    public var width: Int
    public var height: Int
    public var planes: [[Float]]
    /// Pixel size in µm when the file states it.
    public var pixelSizeUm: Double?
    /// Complex data (MRC mode 4) keeps real and imaginary parts interleaved per plane.
    public var isComplex: Bool = false
}

/// Import of plain TIFF stacks and MRC files (IMOD/CCP4 flavour).
public enum ImageImport {
    /// Loads a TIFF (any Moiré-readable pixel type), an OME-Zarr recording, an MRC or PNG file by its
    /// extension, or a folder of PNG files.
    public static func load(_ path: String) throws -> ImageStack {
        let lower = path.lowercased()
        // Before the folder check: a store is a folder.
        if RecordingFormat.named(by: path) != nil { return try loadRecording(path) }
        var isDir: ObjCBool = false
        if lower.hasSuffix(".png")
            || (FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue)
        {
            return try PNGImport.load(path)
        }
        if lower.hasSuffix(".mrc") || lower.hasSuffix(".st") || lower.hasSuffix(".ali") { return try loadMRC(path) }
        throw MoireError(
            .format, "unknown image format; expected .tif, .tiff, .ome.zarr, .mrc, .png or a folder of .png files",
            place: path)
    }

    /// Every plane of a TIFF or a recording (OME-TIFF or OME-Zarr, by the path's suffix).
    public static func loadRecording(_ path: String) throws -> ImageStack {
        let r = try RecordingFormat.openReader(path: path)
        let planes = try (0..<r.planeCount).map { try r.readPlaneFloat($0) }
        return ImageStack(width: r.width, height: r.height, planes: planes, pixelSizeUm: r.layout?.pixelSizeUm)
    }

    /// MRC: 1024-byte header (+ extended header), modes 0 (int8), 1 (int16), 2 (float32), 4 (complex64), 6 (uint16).
    public static func loadMRC(_ path: String) throws -> ImageStack {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MoireError(.io, "cannot read file", place: path)
        }
        guard data.count >= 1024 else {
            throw MoireError(.format, "file is \(data.count) bytes; an MRC header alone is 1024", place: path)
        }
        func i32(_ o: Int) -> Int32 {
            data.withUnsafeBytes { Int32(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: Int32.self)) }
        }
        func f32(_ o: Int) -> Float {
            data.withUnsafeBytes {
                Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
            }
        }
        let nx = Int(i32(0))
        let ny = Int(i32(4))
        let nz = Int(i32(8))
        let mode = Int(i32(12))
        let mx = Int(i32(28))
        let cellX = Double(f32(40))
        let next = Int(i32(92))
        guard nx > 0, ny > 0, nz > 0, nx <= 65536, ny <= 65536, nz <= 1_000_000 else {
            throw MoireError(.format, "MRC header has an invalid size \(nx)×\(ny)×\(nz)", place: path)
        }
        let bpp: Int
        switch mode {
        case 0: bpp = 1;
        case 1, 6: bpp = 2;
        case 2: bpp = 4;
        case 4: bpp = 8
        default: throw MoireError(.format, "MRC mode \(mode) is not supported (expected 0, 1, 2, 4 or 6)", place: path)
        }
        let start = 1024 + max(0, next)
        let planeBytes = nx * ny * bpp
        guard data.count >= start + planeBytes * nz else {
            throw MoireError(
                .format, "MRC data is truncated: \(data.count - start) bytes for \(nz) planes of \(planeBytes)",
                place: path)
        }
        var planes: [[Float]] = []
        data.withUnsafeBytes { b in
            for z in 0..<nz {
                let base = start + z * planeBytes
                var p = [Float](repeating: 0, count: nx * ny * (mode == 4 ? 2 : 1))
                for i in 0..<p.count {
                    switch mode {
                    case 0: p[i] = Float(Int8(bitPattern: b[base + i]))
                    case 1:
                        p[i] = Float(Int16(littleEndian: b.loadUnaligned(fromByteOffset: base + 2 * i, as: Int16.self)))
                    case 6:
                        p[i] = Float(
                            UInt16(littleEndian: b.loadUnaligned(fromByteOffset: base + 2 * i, as: UInt16.self)))
                    default:
                        p[i] = Float(
                            bitPattern: UInt32(
                                littleEndian: b.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self)))
                    }
                }
                planes.append(p)
            }
        }
        let pixel = mx > 0 && cellX > 0 ? cellX / Double(mx) : nil
        // IMOD cells are in Å; convert to µm when the value looks like Å.
        let um = pixel.map { $0 > 0.5 ? $0 / 10_000 : $0 }
        return ImageStack(width: nx, height: ny, planes: planes, pixelSizeUm: um, isComplex: mode == 4)
    }
}
