import Foundation
import Logging
import MoireCore
import MoireStorage

/// One slice of a batch reprocessing job: part `index` (1-based, as a Slurm array task id) of
/// `count` contiguous slices of a recording's time points (phase sets, volumes). Each part writes
/// its own file beside the final output; an existing complete part is not made again, and
/// `moire merge` joins the parts in order into the output a single process would have written.
public struct BatchPart: Sendable, Equatable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1, count <= 100_000, (1...count).contains(index) else {
            throw MoireError(.usage, "a part is K/N with 1 ≤ K ≤ N ≤ 100000; found \(index)/\(count)", place: "--part")
        }
        self.index = index
        self.count = count
    }

    /// `K/N`, as typed.
    public init(parsing text: String) throws {
        let fields = text.split(separator: "/")
        guard fields.count == 2, let index = Int(fields[0]), let count = Int(fields[1]) else {
            throw MoireError(.usage, "a part is K/N (e.g. 3/8); found '\(text.prefix(40))'", place: "--part")
        }
        try self.init(index: index, count: count)
    }

    public var description: String { "\(index)/\(count)" }

    /// The items (of `total`) this part processes: contiguous, sizes differing by at most one,
    /// every item in exactly one part.
    public func range(of total: Int) -> Range<Int> {
        (total * (index - 1) / count)..<(total * index / count)
    }

    /// Where this part of `output` goes: `STEM.part-K-of-N.ome.tif` beside it.
    public func path(for output: String) -> String {
        Self.path(for: output, index: index, count: count)
    }

    public static func path(for output: String, index: Int, count: Int) -> String {
        "\(RecordingIndex.stem(of: output)).part-\(index)-of-\(count).ome.tif"
    }

    /// True when a finished part is already at `path`: a readable OME-TIFF written by Moiré (parts
    /// are written under a temporary name and renamed when complete, so a killed task leaves none).
    public static func isComplete(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
            let reader = try? OMETiffReader(path: path)
        else { return false }
        return reader.layout != nil && reader.planeCount > 0
    }

    /// Writes a part through `write` (given a temporary path beside the final one), then moves it
    /// into place: the final name exists only for a complete part.
    public static func writeAtomically(to path: String, _ write: (String) throws -> Void) throws {
        let temporary = "\(RecordingIndex.stem(of: path)).writing-\(getpid()).ome.tif"
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        try write(temporary)
        guard rename(temporary, path) == 0 else {
            throw MoireError(
                .storage, "could not move the finished part into place: \(String(cString: strerror(errno)))",
                place: path)
        }
    }
}

/// Joins the parts of a batch job into one float32 recording, OME-TIFF or OME-Zarr by the output's
/// suffix (`RecordingFormat`; the parts are OME-TIFF either way): planes in part order, renumbered
/// (`t` continues across parts; `seq` and `index` count planes), every other header field
/// (inputs, parameters, z) as the part wrote it; the layout of the first part with the total
/// number of time points. The result equals what one process would have written, pixel for pixel.
public enum BatchMerge {
    public struct Summary: Sendable {
        public var parts: Int
        public var timepoints: Int
        public var planes: Int
    }

    /// Merges the `count` parts of `output` into `output`. Throws, naming them, when parts are
    /// missing or incomplete, or differ in plane size, pixel type or planes per time point.
    public static func merge(output: String, parts count: Int) throws -> Summary {
        let paths = (1...max(1, count)).map { BatchPart.path(for: output, index: $0, count: count) }
        let missing = paths.enumerated().filter { !BatchPart.isComplete($0.element) }.map { $0.offset + 1 }
        guard missing.isEmpty else {
            throw MoireError(
                .usage,
                "parts \(missing.map(String.init).joined(separator: ", ")) of \(count) are missing or incomplete",
                place: output)
        }
        let readers = try paths.map { try OMETiffReader(path: $0) }
        let layouts = try readers.enumerated().map { index, reader -> RecordingLayout in
            guard let layout = reader.layout else {
                throw MoireError(.format, "not a Moiré recording", place: paths[index])
            }
            return layout
        }
        let first = layouts[0]
        let planesPerTimepoint = first.planesPerTimepoint
        for (index, layout) in layouts.enumerated()
        where layout.width != first.width || layout.height != first.height || layout.pixel != first.pixel
            || layout.planesPerTimepoint != planesPerTimepoint
        {
            throw MoireError(
                .format,
                "part \(index + 1) holds \(layout.width)×\(layout.height) \(layout.pixel.rawValue) planes, "
                    + "\(layout.planesPerTimepoint) per time point; part 1 \(first.width)×\(first.height) "
                    + "\(first.pixel.rawValue), \(planesPerTimepoint)", place: paths[index])
        }
        let timepoints = readers.map { $0.planeCount / planesPerTimepoint }.reduce(0, +)
        var layout = first
        layout.run = "\(first.channels.first ?? "merged")-\(UUID().uuidString.prefix(8).lowercased())"
        layout.timepoints = timepoints
        let writer = try RecordingFormat(path: output).makeWriter(
            path: output, layout: layout, logger: Logger(label: "moire.merge"))
        var buffer = [UInt8](repeating: 0, count: first.planeBytes)
        var plane = 0
        var timepointOffset = 0
        for (index, reader) in readers.enumerated() {
            guard let records = reader.planeRecords() else {
                throw MoireError(.format, "the part's plane records cannot be read", place: paths[index])
            }
            for (local, record) in records.enumerated() {
                var header = record.header
                header.run = layout.run
                header.t = timepointOffset + local / planesPerTimepoint
                header.seq = plane
                header.index = plane
                try buffer.withUnsafeMutableBytes { bytes in
                    try reader.readPlane(local, into: bytes)
                    try writer.write(header: header, payload: UnsafeRawBufferPointer(bytes))
                }
                plane += 1
            }
            timepointOffset += reader.planeCount / planesPerTimepoint
        }
        try writer.finish()
        try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: output))
        return Summary(parts: count, timepoints: timepoints, planes: plane)
    }
}
