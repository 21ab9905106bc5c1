import Foundation

/// Checks on a file before a reader opens it.
public enum InputFile {
    /// Throws unless `path` is a regular file: a FIFO, a device or a directory would block a reader
    /// or feed it without end. Symbolic links are followed.
    public static func requireRegular(_ path: String) throws {
        _ = try size(path)
    }

    /// The size in bytes of `path`, which must be a regular file.
    public static func size(_ path: String) throws -> UInt64 {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw MoireError(.io, "cannot open: \(String(cString: strerror(errno)))", place: path)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw MoireError(.io, "not a regular file (a FIFO, device or directory); refused", place: path)
        }
        return UInt64(info.st_size)
    }
}
