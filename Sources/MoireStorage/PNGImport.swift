import Foundation
import MoireCore

/// PNG import for the offline commands: greyscale (and colour, read as the mean of R, G, B), 8 or 16
/// bits, not interlaced. Chunk CRCs and the zlib Adler-32 are checked.
///
/// Written here because no PNG or zlib library is among the project's dependencies; the inflate
/// follows RFC 1950/1951 (canonical Huffman decoding as in zlib's reference decoder `puff`).
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

/// RFC 1950 (zlib) and RFC 1951 (deflate) decoding.
enum Inflate {
    struct Failure: Error { let message: String }

    /// The decompressed bytes of a zlib stream (header and Adler-32 checked).
    static func zlib(_ input: [UInt8], expected: Int, place: String) throws -> [UInt8] {
        do {
            guard input.count >= 6 else { throw Failure(message: "zlib stream too short") }
            let cmf = Int(input[0])
            let flg = Int(input[1])
            guard cmf & 0x0F == 8, (cmf << 8 | flg) % 31 == 0 else {
                throw Failure(message: "not a deflate zlib stream")
            }
            guard flg & 0x20 == 0 else { throw Failure(message: "preset dictionary is not supported") }
            var s = State(input: input, position: 2)
            s.output.reserveCapacity(expected)
            try s.run(limit: expected)
            let end = s.position
            guard end + 4 <= input.count else { throw Failure(message: "Adler-32 missing (truncated data)") }
            let want =
                UInt32(input[end]) << 24 | UInt32(input[end + 1]) << 16 | UInt32(input[end + 2]) << 8
                | UInt32(input[end + 3])
            guard adler32(s.output) == want else { throw Failure(message: "Adler-32 mismatch (damaged data)") }
            return s.output
        } catch let f as Failure {
            throw MoireError(.format, "PNG: \(f.message)", place: place)
        }
    }

    static func adler32(_ d: [UInt8]) -> UInt32 {
        var a: UInt32 = 1
        var b: UInt32 = 0
        var i = 0
        while i < d.count {
            let n = min(5552, d.count - i)
            for k in i..<(i + n) { a += UInt32(d[k]); b += a }
            a %= 65521; b %= 65521
            i += n
        }
        return b << 16 | a
    }

    /// A canonical Huffman code: code-length counts and symbols in code order.
    struct Huffman {
        var count = [Int](repeating: 0, count: 16)
        var symbol: [Int]
        init(lengths: [Int]) throws {
            symbol = [Int](repeating: 0, count: lengths.count)
            for l in lengths { count[l] += 1 }
            count[0] = 0
            var left = 1
            for len in 1..<16 {
                left <<= 1
                left -= count[len]
                guard left >= 0 else { throw Failure(message: "over-subscribed Huffman code") }
            }
            var offs = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offs[len + 1] = offs[len] + count[len] }
            for (sym, l) in lengths.enumerated() where l != 0 { symbol[offs[l]] = sym; offs[l] += 1 }
        }
    }

    struct State {
        let input: [UInt8]
        var position: Int
        var bitBuffer = 0, bitCount = 0
        var output: [UInt8] = []

        init(input: [UInt8], position: Int) { self.input = input; self.position = position }

        mutating func bits(_ n: Int) throws -> Int {
            var v = bitBuffer
            while bitCount < n {
                guard position < input.count else { throw Failure(message: "compressed data ends early (truncated)") }
                v |= Int(input[position]) << bitCount
                position += 1
                bitCount += 8
            }
            bitBuffer = v >> n
            bitCount -= n
            return v & ((1 << n) - 1)
        }

        mutating func decode(_ h: Huffman) throws -> Int {
            var code = 0
            var first = 0
            var index = 0
            for len in 1..<16 {
                code |= try bits(1)
                let c = h.count[len]
                if code - c < first { return h.symbol[index + (code - first)] }
                index += c; first += c
                first <<= 1; code <<= 1
            }
            throw Failure(message: "invalid Huffman code")
        }

        static let lengthBase = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195,
            227, 258,
        ]
        static let lengthExtra = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ]
        static let distBase = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
            4097, 6145, 8193, 12289, 16385, 24577,
        ]
        static let distExtra = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
        ]

        mutating func run(limit: Int) throws {
            var last = 0
            repeat {
                last = try bits(1)
                switch try bits(2) {
                case 0: try stored()
                case 1:
                    let lit = try Huffman(lengths: (0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
                    try codes(lit, try Huffman(lengths: [Int](repeating: 5, count: 30)), limit: limit)
                case 2: try dynamic(limit: limit)
                default: throw Failure(message: "invalid deflate block type")
                }
                guard output.count <= limit else { throw Failure(message: "more image data than the header announces") }
            } while last == 0
            bitBuffer = 0; bitCount = 0  // the Adler-32 starts at the next byte
        }

        mutating func stored() throws {
            bitBuffer = 0; bitCount = 0
            guard position + 4 <= input.count else { throw Failure(message: "stored block header truncated") }
            let len = Int(input[position]) | Int(input[position + 1]) << 8
            let nlen = Int(input[position + 2]) | Int(input[position + 3]) << 8
            guard len == (~nlen & 0xFFFF) else { throw Failure(message: "stored block length check fails") }
            position += 4
            guard position + len <= input.count else { throw Failure(message: "stored block truncated") }
            output += input[position..<(position + len)]
            position += len
        }

        mutating func dynamic(limit: Int) throws {
            let nlen = try bits(5) + 257
            let ndist = try bits(5) + 1
            let ncode = try bits(4) + 4
            guard nlen <= 286, ndist <= 30 else { throw Failure(message: "bad dynamic block counts") }
            let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
            var cl = [Int](repeating: 0, count: 19)
            for i in 0..<ncode { cl[order[i]] = try bits(3) }
            let lencode = try Huffman(lengths: cl)
            var lengths: [Int] = []
            while lengths.count < nlen + ndist {
                let sym = try decode(lencode)
                if sym < 16 { lengths.append(sym); continue }
                var rep = 0
                var val = 0
                switch sym {
                case 16:
                    guard let prev = lengths.last else { throw Failure(message: "repeat with no previous length") }
                    val = prev; rep = 3 + (try bits(2))
                case 17: rep = 3 + (try bits(3))
                default: rep = 11 + (try bits(7))
                }
                guard lengths.count + rep <= nlen + ndist else { throw Failure(message: "too many code lengths") }
                lengths += [Int](repeating: val, count: rep)
            }
            guard lengths[256] != 0 else { throw Failure(message: "no end-of-block code") }
            try codes(
                try Huffman(lengths: Array(lengths[0..<nlen])), try Huffman(lengths: Array(lengths[nlen...])),
                limit: limit)
        }

        mutating func codes(_ lit: Huffman, _ dist: Huffman, limit: Int) throws {
            while true {
                let sym = try decode(lit)
                if sym < 256 {
                    output.append(UInt8(sym))
                } else if sym == 256 {
                    return
                } else {
                    let s = sym - 257
                    guard s < 29 else { throw Failure(message: "invalid length symbol") }
                    let len = Self.lengthBase[s] + (try bits(Self.lengthExtra[s]))
                    let ds = try decode(dist)
                    guard ds < 30 else { throw Failure(message: "invalid distance symbol") }
                    let d = Self.distBase[ds] + (try bits(Self.distExtra[ds]))
                    guard d <= output.count else {
                        throw Failure(message: "distance reaches before the start of the data")
                    }
                    let start = output.count - d
                    for k in 0..<len { output.append(output[start + k]) }
                }
                guard output.count <= limit else { throw Failure(message: "more image data than the header announces") }
            }
        }
    }
}
