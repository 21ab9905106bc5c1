import CTIFF
import CZlib
import Foundation
import MoireCore

/// The one funnel for libtiff calls: a zero/NULL result becomes a typed error with libtiff's message.
enum TIFFCall {
    static let installed: Bool = {
        moire_tiff_install_handlers()
        return true
    }()

    static func check(_ ok: Int32, _ what: @autoclosure () -> String, path: String) throws {
        let code = errno
        if ok != 0 { return }
        throw failure(what(), code: code, path: path)
    }

    static func check(_ ok: tmsize_t, _ what: @autoclosure () -> String, path: String) throws {
        let code = errno
        if ok >= 0 { return }
        throw failure(what(), code: code, path: path)
    }

    /// libtiff's message, led by the operating system's reason when it is one a user must act on
    /// (a full disk, a quota, a read-only or failing device): libtiff alone says "Write error".
    static func failure(_ what: String, code: Int32, path: String) -> MoireError {
        let detail = lastError()
        guard let reason = OSFailure.describe(code) else {
            if code != 0 && what.hasPrefix("opening") {
                return MoireError(
                    .storage, "\(what) failed: \(String(cString: strerror(code))) (\(detail))", place: path)
            }
            return MoireError(.storage, "\(what) failed: \(detail)", place: path)
        }
        return MoireError(.storage, "\(reason) while \(what) (\(detail))", place: path)
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
        errno = 0
        guard let t = TIFFOpen(path, mode) else {
            throw failure("opening the TIFF (\(mode))", code: errno, path: path)
        }
        return t
    }
}

/// Operating-system errors that a person at the microscope must act on, named as such.
public enum OSFailure {
    /// A sentence for `code` when it is a storage failure a user must act on, else nil.
    public static func describe(_ code: Int32) -> String? {
        switch code {
        case ENOSPC: return "no space left on the device (ENOSPC)"
        case EDQUOT: return "disk quota exceeded (EDQUOT)"
        case EROFS: return "the file system is read-only (EROFS)"
        case EIO: return "input/output error: the disk or its connection failed (EIO)"
        case EFBIG: return "the file is larger than the file system allows (EFBIG)"
        default: return nil
        }
    }
}

/// CRC-32 (IEEE 802.3, zlib's `crc32`), for the recording index and PNG chunks.
public enum CRC32 {
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var crc = UInt(seed)
        var rest = bytes[...]
        // zlib takes the length as a 32-bit count: longer buffers go in pieces.
        while !rest.isEmpty {
            let piece = UnsafeRawBufferPointer(rebasing: rest.prefix(1 << 30))
            crc = crc32(crc, piece.baseAddress?.assumingMemoryBound(to: UInt8.self), uInt(piece.count))
            rest = rest.dropFirst(piece.count)
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    public static func checksum(_ data: Data) -> UInt32 { data.withUnsafeBytes { checksum($0) } }
}
