import CZlib
import Foundation
import MoireCore

/// PNG import for the offline commands: greyscale (and colour, read as the mean of R, G, B), 8 or 16
/// bits, not interlaced. Chunk CRCs and the zlib Adler-32 are checked; zlib inflates the data.
public enum PNGImport {
    /// The planes of a PNG file (one) or of a folder of PNG files (one plane per file, by file name).
    public static func load(_ path: String) throws -> ImageStack {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw MoireError(.io, "no such file", place: path)
        }
        guard isDir.boolValue else { return try decode(Data(contentsOf: URL(fileURLWithPath: path)), place: path) }
        let names = try FileManager.default.contentsOfDirectory(atPath: path).filter {
            $0.lowercased().hasSuffix(".png")
        }.sorted()
        guard !names.isEmpty else { throw MoireError(.format, "the folder holds no .png files", place: path) }
        var stack: ImageStack?
        for n in names {
            let p = (path as NSString).appendingPathComponent(n)
            let one = try decode(Data(contentsOf: URL(fileURLWithPath: p)), place: p)
            if let s = stack, s.width != one.width || s.height != one.height {
                throw MoireError(
                    .format, "\(one.width)×\(one.height) differs from the first file's \(s.width)×\(s.height)", place: p
                )
            }
            if stack == nil { stack = one } else { stack!.planes += one.planes }
        }
        return stack!
    }

    /// Decodes one PNG image into a one-plane stack.
    public static func decode(_ data: Data, place: String) throws -> ImageStack {
        let b = [UInt8](data)
        func fail(_ m: String) -> MoireError { MoireError(.format, "PNG: \(m)", place: place) }
        guard b.count >= 8, b[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw fail("not a PNG file (bad signature)")
        }
        func u32(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        var pos = 8
        var header: (w: Int, h: Int, depth: Int, colour: Int)?
        var idat: [UInt8] = []
        var ended = false
        while pos + 12 <= b.count {
            let len = u32(pos)
            guard len <= b.count - pos - 12 else {
                throw fail("chunk at byte \(pos) runs past the end of the file (truncated?)")
            }
            let type = String(decoding: b[(pos + 4)..<(pos + 8)], as: UTF8.self)
            let body = pos + 8
            let crc = b[(pos + 4)..<(body + len)].withUnsafeBytes { CRC32.checksum($0) }
            guard UInt32(truncatingIfNeeded: u32(body + len)) == crc else {
                throw fail("chunk \(type) at byte \(pos) fails its CRC (damaged file)")
            }
            switch type {
            case "IHDR":
                guard len == 13 else { throw fail("IHDR has \(len) bytes") }
                let w = u32(body)
                let h = u32(body + 4)
                let depth = Int(b[body + 8])
                let colour = Int(b[body + 9])
                guard w > 0, h > 0, w <= 1 << 16, h <= 1 << 16 else {
                    throw fail("image size \(w)×\(h) is out of range")
                }
                guard depth == 8 || depth == 16 else { throw fail("bit depth \(depth) is not supported (8 or 16)") }
                guard [0, 2, 4, 6].contains(colour) else {
                    throw fail("colour type \(colour) (palette) is not supported; save as greyscale")
                }
                guard b[body + 10] == 0, b[body + 11] == 0 else { throw fail("unknown compression or filter method") }
                guard b[body + 12] == 0 else { throw fail("interlaced PNG is not supported; save without interlacing") }
                header = (w, h, depth, colour)
            case "IDAT": idat += b[body..<(body + len)]
            case "IEND": ended = true
            default: break
            }
            pos = body + len + 4
            if ended { break }
        }
        guard let hd = header else { throw fail("no IHDR chunk") }
        guard ended else { throw fail("no IEND chunk (truncated file)") }
        let channels = [0: 1, 2: 3, 4: 2, 6: 4][hd.colour]!
        let bpp = channels * hd.depth / 8
        let stride = hd.w * bpp
        let raw = try Inflate.zlib(idat, expected: hd.h * (stride + 1), place: place)
        guard raw.count == hd.h * (stride + 1) else {
            throw fail("image data holds \(raw.count) bytes; \(hd.h * (stride + 1)) expected")
        }
        // Undo the per-row filters.
        var pix = [UInt8](repeating: 0, count: hd.h * stride)
        for y in 0..<hd.h {
            let f = raw[y * (stride + 1)]
            let src = y * (stride + 1) + 1
            let dst = y * stride
            for x in 0..<stride {
                let a = x >= bpp ? Int(pix[dst + x - bpp]) : 0
                let up = y > 0 ? Int(pix[dst - stride + x]) : 0
                let c = (x >= bpp && y > 0) ? Int(pix[dst - stride + x - bpp]) : 0
                let v = Int(raw[src + x])
                let pred: Int
                switch f {
                case 0: pred = 0
                case 1: pred = a
                case 2: pred = up
                case 3: pred = (a + up) / 2
                case 4:
                    let p = a + up - c
                    let pa = abs(p - a)
                    let pb = abs(p - up)
                    let pc = abs(p - c)
                    pred = pa <= pb && pa <= pc ? a : (pb <= pc ? up : c)
                default: throw fail("row \(y) has unknown filter type \(f)")
                }
                pix[dst + x] = UInt8(truncatingIfNeeded: v + pred)
            }
        }
        // Samples (big-endian for 16 bit); colour as the mean of R, G, B; alpha ignored.
        let colourChannels = hd.colour == 2 || hd.colour == 6 ? 3 : 1
        var plane = [Float](repeating: 0, count: hd.w * hd.h)
        for i in 0..<(hd.w * hd.h) {
            var sum: Float = 0
            for ch in 0..<colourChannels {
                let o = i * bpp + ch * hd.depth / 8
                sum += hd.depth == 8 ? Float(pix[o]) : Float(Int(pix[o]) << 8 | Int(pix[o + 1]))
            }
            plane[i] = sum / Float(colourChannels)
        }
        return ImageStack(width: hd.w, height: hd.h, planes: [plane], pixelSizeUm: nil)
    }
}

/// RFC 1950 (zlib) decoding through zlib itself.
enum Inflate {
    /// The decompressed bytes of a zlib stream (zlib checks the header and the Adler-32); at most
    /// `expected` bytes are produced, so a stream that inflates to more is refused, not followed.
    static func zlib(_ input: [UInt8], expected: Int, place: String) throws -> [UInt8] {
        func fail(_ message: String) -> MoireError { MoireError(.format, "PNG: \(message)", place: place) }
        guard !input.isEmpty else { throw fail("no image data (IDAT)") }
        var output = [UInt8](repeating: 0, count: max(1, expected))
        var produced = uLong(output.count)
        let status = output.withUnsafeMutableBufferPointer { destination in
            input.withUnsafeBufferPointer { source in
                uncompress(destination.baseAddress, &produced, source.baseAddress, uLong(source.count))
            }
        }
        switch status {
        case Z_OK:
            return Array(output.prefix(Int(produced)))
        case Z_BUF_ERROR where produced == uLong(output.count):
            throw fail("image data inflates to more than the \(expected) bytes its size needs")
        case Z_BUF_ERROR:
            throw fail("image data ends early (truncated data)")
        case Z_DATA_ERROR:
            throw fail("image data is damaged (not a valid zlib stream, or its Adler-32 does not match)")
        case Z_MEM_ERROR:
            throw fail("not enough memory to inflate the image data")
        default:
            throw fail("zlib could not inflate the image data (status \(status))")
        }
    }
}
