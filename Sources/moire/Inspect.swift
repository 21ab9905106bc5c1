import ArgumentParser
import Foundation
import MoireCore
import MoireStorage

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a recording's dimensions, frame count, missing frames and timing.")
    @Argument(help: "OME-TIFF or OME-Zarr recording, or a TIFF/MRC file.") var file: String

    func run() throws {
        bootstrapLogging(verbose: false)
        do { try inspect() } catch let e as ExitCode { throw e } catch { throw fail(error) }
    }

    private func inspect() throws {
        if file.lowercased().hasSuffix(".mrc") {
            let s = try ImageImport.loadMRC(file)
            print(
                "\(file): MRC, \(s.width)×\(s.height)×\(s.planes.count)\(s.isComplex ? " complex" : ""), pixel \(s.pixelSizeUm.map { "\($0) µm" } ?? "unknown")"
            )
            return
        }
        if RecordingFormat(path: file) == .omeZarr {
            let contents = try OMEZarrContents.read(path: file)
            report(layout: contents.layout, planes: contents.planes, notWritten: contents.summary?.padded ?? 0)
            if contents.unreadableLines > 0 {
                print("  plane log: \(contents.unreadableLines) line(s) unreadable (torn by an interruption)")
            }
            print(
                "  store: \(contents.summary == nil ? "NOT closed (interrupted); every complete plane is readable" : "closed cleanly")"
            )
            return
        }
        let indexPath = RecordingIndex.path(for: file)
        let r: OMETiffReader
        do { r = try OMETiffReader(path: file) } catch {
            if FileManager.default.fileExists(atPath: indexPath) {
                print("\(file): unreadable as TIFF (\(error)); it has a recording index: run `moire recover \(file)`")
                throw ExitCode(1)
            }
            throw error
        }
        guard let layout = r.layout, let planes = r.planeRecords() else {
            print("\(file): TIFF, \(r.planeCount) planes of \(r.width)×\(r.height) \(r.bitsPerSample)-bit")
            if FileManager.default.fileExists(atPath: indexPath), let idx = try? RecordingIndex.read(path: indexPath),
                !idx.closed
            {
                print(
                    "recording is incomplete: its index lists \(idx.entries.count) complete planes; run `moire recover \(file)`"
                )
                throw ExitCode(1)
            }
            return
        }
        report(layout: layout, planes: planes)
        if FileManager.default.fileExists(atPath: indexPath), let idx = try? RecordingIndex.read(path: indexPath) {
            print(
                "  index: \(idx.entries.count) records, \(idx.closed ? "closed cleanly" : "NOT closed (interrupted)")")
        }
    }

    /// Dimensions, plane counts, missing planes and frame timing of a recording's plane records;
    /// `notWritten`: planes of the last time point that have no record (OME-Zarr leaves them out).
    private func report(layout: RecordingLayout, planes: [PlaneRecord], notWritten: Int = 0) {
        let missing = planes.filter { $0.acquired && $0.header.missing }
        let paddedCount = planes.filter { !$0.acquired }.count + notWritten
        let total = planes.count + notWritten
        print("\(file)")
        print("  run \(layout.run): \(layout.name) (\(layout.mode))")
        print(
            "  dimensions: T=\(total / layout.planesPerTimepoint) C=\(layout.channels.count) Z=\(layout.zPlanes) angles=\(layout.angles) phases=\(layout.phases) Y=\(layout.height) X=\(layout.width) \(layout.pixel.rawValue)"
        )
        print(
            "  channels: \(layout.channels.joined(separator: ", ")); pixel \(String(format: "%.4f", layout.pixelSizeUm)) µm"
        )
        print(
            "  planes: \(total) written, \(total - missing.count - paddedCount) acquired, \(missing.count) missing, \(paddedCount) not acquired (run stopped)"
        )
        print("  planned: \(layout.timepoints * layout.planesPerTimepoint) planes (\(layout.timepoints) time points)")
        let poolLost = missing.filter { $0.header.missingReason == .poolExhausted }.count
        if poolLost > 0 {
            print(
                "  of the missing: \(poolLost) lost because every frame-pool slot was in use (consumers did not keep up)"
            )
        }
        if !missing.isEmpty {
            print("  missing plane indices: \(missing.map { String($0.header.index) }.joined(separator: ", "))")
        }
        let starts = planes.filter { $0.acquired && !$0.header.missing }.map(\.header.exposureStartNs)
        if starts.count > 1 {
            let d = zip(starts.dropFirst(), starts).map { Double($0 - $1) / 1e6 }
            let mean = d.reduce(0, +) / Double(d.count)
            let sd = (d.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d.count)).squareRoot()
            print(
                String(
                    format:
                        "  timing: frame interval mean %.3f ms, sd %.3f ms, min %.3f ms, max %.3f ms (%.1f fps); span %.3f s",
                    mean, sd, d.min()!, d.max()!, 1000 / mean, Double(starts.last! - starts.first!) / 1e9))
        }
    }
}

struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild a valid OME-TIFF from an interrupted recording and its index.")
    @Argument(help: "The interrupted recording.") var file: String
    @Option(name: .long, help: "Output path (default: NAME.recovered.ome.tif).") var out: String?
    @OptionGroup var output: OutputOptions

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            try output.check(outputs: [out ?? Recovery.defaultOutput(file)], inputs: [file])
            let r = try Recovery.recover(file, output: out)
            print(
                "recovered \(r.recovered) complete frames (\(r.summary.missing) recorded as missing) into \(r.summary.path)"
            )
            print(
                "  \(r.summary.timepoints) time points, \(r.summary.padded) planes padded to complete the last one (flagged not acquired)"
            )
            if r.corrupt > 0 { print("  \(r.corrupt) plane(s) torn at the interruption were left out") }
            if r.indexWasClosed { print("  note: the recording had been closed cleanly; nothing was lost") }
        } catch { throw fail(error) }
    }
}
