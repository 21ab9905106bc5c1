import CTIFF
import Foundation
import MoireCore

/// The one funnel for libtiff calls: a zero/NULL result becomes a typed error with libtiff's message.
enum TIFFCall {
    static let installed: Bool = {
        moire_tiff_install_handlers()
        return true
    }()

    static func check(_ ok: Int32, _ what: @autoclosure () -> String, path: String) throws {
        if ok != 0 { return }
        throw MoireError(.storage, "\(what()) failed: \(lastError())", place: path)
    }

    static func check(_ ok: tmsize_t, _ what: @autoclosure () -> String, path: String) throws {
        if ok >= 0 { return }
        throw MoireError(.storage, "\(what()) failed: \(lastError())", place: path)
    }

    static func lastError() -> String {
        let s = String(cString: moire_tiff_last_error())
        moire_tiff_clear_error()
        return s.isEmpty ? "libtiff error" : s
    }

    /// Opens a TIFF; nil handles become an error naming the file.
    static func open(_ path: String, mode: String) throws -> OpaquePointer {
        _ = installed
        moire_tiff_clear_error()
        guard let t = TIFFOpen(path, mode) else {
            throw MoireError(.storage, "cannot open TIFF (\(mode)): \(lastError())", place: path)
        }
        return t
    }
}

/// CRC-32 (IEEE 802.3), for the recording index.
public enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var c = ~seed
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }

    public static func checksum(_ data: Data) -> UInt32 { data.withUnsafeBytes { checksum($0) } }
}
