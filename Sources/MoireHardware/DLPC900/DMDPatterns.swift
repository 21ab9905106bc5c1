import Foundation
import MoireConfig
import MoireCore

/// Binary DMD images for a modulator profile's patterns, and the DLPC900's image format for
/// pattern-on-the-fly upload: 24 one-bit patterns per 24-bit image (bit plane n = bit n of the
/// pixel), a 48-byte header and enhanced run-length encoding (ERLE).
public enum DMDPatterns {
    /// A binary grating for a pattern: mirror (x, y) is on when the pattern's cosine at the mirror's
    /// position in the sample, cos(2π(kx·x + ky·y)·s + φ), is ≥ 0 (s: sample µm per mirror). Its
    /// fundamental lies at the pattern's wave vector with the pattern's phase.
    public static func grating(_ p: PatternSpec, geometry g: DMDGeometry) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: g.width * g.height)
        let fx = p.kx * g.sampleUmPerMirror
        let fy = p.ky * g.sampleUmPerMirror
        for y in 0..<g.height {
            for x in 0..<g.width {
                out[y * g.width + x] = cos(2 * .pi * (fx * Double(x) + fy * Double(y)) + p.phaseRad) >= 0 ? 1 : 0
            }
        }
        return out
    }

    /// The 24-bit images a profile's patterns fill, by image index: each pattern's grating in its
    /// `dmd` bit plane, all mirrors on in `dmd_uniform`'s.
    public static func images(for profile: ModulatorProfile, geometry g: DMDGeometry) -> [Int: [UInt32]] {
        var images: [Int: [UInt32]] = [:]
        func set(_ d: DMDImage, _ mask: [UInt8]) {
            var img = images[d.image] ?? [UInt32](repeating: 0, count: g.width * g.height)
            let bit = UInt32(1) << UInt32(d.bit)
            for i in 0..<img.count where mask[i] != 0 { img[i] |= bit }
            images[d.image] = img
        }
        for p in profile.patternSets.flatMap(\.patterns) { if let d = p.dmd { set(d, grating(p, geometry: g)) } }
        if let u = profile.uniformDMD { set(u, [UInt8](repeating: 1, count: g.width * g.height)) }
        return images
    }

    // MARK: ERLE

    /// A run length as ERLE writes it: one byte below 128, else (n & 0x7F) | 0x80 then n >> 7.
    static func length(_ n: Int) -> [UInt8] { n < 128 ? [UInt8(n)] : [UInt8(n & 0x7F) | 0x80, UInt8(n >> 7)] }
    static func pixelBytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    /// ERLE of a 24-bit image: per row, a row equal to the previous one as "copy n pixels from the
    /// line above" (0x00 0x01 n), else runs (n, pixel); the image ends with 0x00 0x01 0x00.
    /// Pixels are 3 bytes: bits 16–23, 8–15, 0–7.
    public static func encodeERLE(_ pixels: [UInt32], width: Int, height: Int) -> [UInt8] {
        var out: [UInt8] = []
        for y in 0..<height {
            let row = pixels[(y * width)..<((y + 1) * width)]
            if y > 0, row.elementsEqual(pixels[((y - 1) * width)..<(y * width)]) {
                out += [0x00, 0x01] + length(width)
                continue
            }
            var x = 0
            while x < width {
                let v = row[row.startIndex + x]
                var n = 1
                while x + n < width, n < 0x7FFF, row[row.startIndex + x + n] == v { n += 1 }
                out += length(n) + pixelBytes(v)
                x += n
            }
        }
        return out + [0x00, 0x01, 0x00]
    }

    /// Decodes ERLE (as encoded above, plus literal blocks 0x00 n>1 pixels…); every length is checked.
    public static func decodeERLE(_ b: [UInt8], width: Int, height: Int) throws -> [UInt32] {
        var img = [UInt32](repeating: 0, count: width * height)
        var i = 0
        var pos = 0
        func bad(_ why: String) -> MoireError { MoireError(.format, "DMD image (ERLE) at byte \(i): \(why)") }
        func len() throws -> Int {
            guard i < b.count else { throw bad("truncated length") }
            let first = Int(b[i]); i += 1
            guard first >= 128 else { return first }
            guard i < b.count else { throw bad("truncated length") }
            let n = (Int(b[i]) << 7) | (first & 0x7F); i += 1
            return n
        }
        func pixel() throws -> UInt32 {
            guard i + 3 <= b.count else { throw bad("truncated pixel") }
            defer { i += 3 }
            return UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
        }
        while true {
            guard i < b.count else { throw bad("no end-of-image mark") }
            if b[i] == 0 {
                guard i + 1 < b.count else { throw bad("truncated control") }
                let code = b[i + 1]; i += 2
                if code == 1 {
                    let n = try len()
                    if n == 0 { break }  // end of image
                    guard pos >= width, pos + n <= img.count else {
                        throw bad("copy of \(n) pixels from a line that is not there")
                    }
                    for k in 0..<n { img[pos + k] = img[pos + k - width] }
                    pos += n
                } else if code == 0 {
                    continue  // end of line (RLE compatibility)
                } else {
                    i -= 1
                    let n = try len()
                    guard pos + n <= img.count else { throw bad("\(n) literal pixels overflow the image") }
                    for k in 0..<n { img[pos + k] = try pixel() }
                    pos += n
                }
            } else {
                let n = try len()
                let v = try pixel()
                guard pos + n <= img.count else { throw bad("a run of \(n) overflows the image") }
                for k in 0..<n { img[pos + k] = v }
                pos += n
            }
        }
        guard pos == img.count else {
            throw MoireError(.format, "DMD image (ERLE): \(pos) pixels decoded; \(img.count) expected")
        }
        return img
    }

    // MARK: the image header

    /// The 48-byte header before an uploaded image: "Spld", width, height, byte count of the
    /// encoded data, 8 × 0xFF, background (4 bytes), 0x01, compression (2: ERLE), 0x01, 0, 0, 0x01, 18 × 0.
    public static func header(width: Int, height: Int, encodedBytes: Int) -> [UInt8] {
        var h: [UInt8] = [0x53, 0x70, 0x6C, 0x64]
        h.le(UInt16(width)); h.le(UInt16(height)); h.le(UInt32(encodedBytes))
        h +=
            [UInt8](repeating: 0xFF, count: 8) + [0, 0, 0, 0] + [0x01, 0x02, 0x01, 0x00, 0x00, 0x01]
            + [UInt8](repeating: 0, count: 18)
        return h
    }

    /// Parses an uploaded image (header + ERLE data) into its pixels.
    public static func parse(_ data: [UInt8]) throws -> (width: Int, height: Int, pixels: [UInt32]) {
        guard data.count >= 48, Array(data[0..<4]) == [0x53, 0x70, 0x6C, 0x64] else {
            throw MoireError(.format, "DMD image: no 'Spld' header")
        }
        var r = LEReader(Array(data[4..<12]), what: "DMD image header")
        let w = Int(try r.u16())
        let h = Int(try r.u16())
        let n = Int(try r.u32())
        guard (1...4096).contains(w), (1...4096).contains(h) else {
            throw MoireError(.format, "DMD image: size \(w)×\(h)")
        }
        guard data[25] == 2 else {
            throw MoireError(.format, "DMD image: compression \(data[25]) (only ERLE, 2, is read)")
        }
        guard data.count == 48 + n else {
            throw MoireError(.format, "DMD image: \(data.count - 48) data bytes; the header says \(n)")
        }
        return (w, h, try decodeERLE(Array(data[48...]), width: w, height: h))
    }
}
