import CZlib
import Foundation

/// Writes 8-bit grayscale PNGs (image data compressed by zlib at its default level).
public enum PNGWriter {
    /// Encodes `pixels` (row-major, `width × height`, 0…255).
    public static func encode(width: Int, height: Int, pixels: [UInt8]) -> Data {
        var raw = Data(capacity: (width + 1) * height)
        for y in 0..<height { raw.append(0); raw.append(contentsOf: pixels[(y * width)..<((y + 1) * width)]) }
        let z = deflated(raw)
        var png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = Data()
        ihdr.append(contentsOf: withUnsafeBytes(of: UInt32(width).bigEndian, Array.init))
        ihdr.append(contentsOf: withUnsafeBytes(of: UInt32(height).bigEndian, Array.init))
        ihdr.append(contentsOf: [8, 0, 0, 0, 0])
        png.append(chunk("IHDR", ihdr)); png.append(chunk("IDAT", z)); png.append(chunk("IEND", Data()))
        return png
    }

    /// A zlib stream (RFC 1950: header, deflate, Adler-32) of `raw`, as PNG's IDAT holds it.
    static func deflated(_ raw: Data) -> Data {
        var size = compressBound(uLong(raw.count))
        var out = Data(count: Int(size))
        let status = out.withUnsafeMutableBytes { destination in
            raw.withUnsafeBytes { source in
                compress2(
                    destination.baseAddress?.assumingMemoryBound(to: Bytef.self), &size,
                    source.baseAddress?.assumingMemoryBound(to: Bytef.self), uLong(raw.count), Z_DEFAULT_COMPRESSION)
            }
        }
        // compressBound is enough by definition; only running out of memory fails.
        precondition(status == Z_OK, "zlib compress2 failed (\(status))")
        out.count = Int(size)
        return out
    }

    private static func chunk(_ type: String, _ body: Data) -> Data {
        var d = Data(withUnsafeBytes(of: UInt32(body.count).bigEndian, Array.init))
        let t = Data(type.utf8)
        d.append(t); d.append(body)
        d.append(contentsOf: withUnsafeBytes(of: CRC32.checksum(t + body).bigEndian, Array.init))
        return d
    }

    /// Maps floats to 0…255 between the `lo` and `hi` percentiles.
    public static func normalise(_ v: [Float], lo: Double = 0.1, hi: Double = 99.9) -> [UInt8] {
        let sorted = v.filter(\.isFinite).sorted()
        guard !sorted.isEmpty else { return [UInt8](repeating: 0, count: v.count) }
        let a = sorted[Int(Double(sorted.count - 1) * lo / 100)]
        let b = sorted[Int(Double(sorted.count - 1) * hi / 100)]
        let s = b > a ? 255 / (b - a) : 0
        return v.map { UInt8(max(0, min(255, (($0 - a) * s).rounded()))) }
    }

    /// Side-by-side panels of equal height (each normalised on its own), separated by a 4-pixel gap.
    public static func panels(_ images: [(width: Int, height: Int, pixels: [Float])]) -> (Int, Int, [UInt8]) {
        let h = images.map(\.height).max() ?? 0
        let w = images.map(\.width).reduce(0, +) + 4 * max(0, images.count - 1)
        var out = [UInt8](repeating: 255, count: w * h)
        var x0 = 0
        for img in images {
            let p = normalise(img.pixels)
            for y in 0..<img.height { for x in 0..<img.width { out[y * w + x0 + x] = p[y * img.width + x] } }
            x0 += img.width + 4
        }
        return (w, h, out)
    }
}
