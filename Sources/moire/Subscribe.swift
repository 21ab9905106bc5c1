import ArgumentParser
import Foundation
import MoireCore
import MoireStorage
import MoireTransport

struct Subscribe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive frames from a result bus and print (or record) them.")

    @Argument(help: "Endpoint, e.g. tcp://127.0.0.1:5560.") var endpoint: String
    @Option(name: .long, help: "Topic prefix (raw., raw.gfp, sr., run); all when omitted.") var topic: String?
    @Option(name: .long, help: "Write received frames to this OME-TIFF.") var out: String?
    @OptionGroup var output: OutputOptions
    @Option(name: .long, help: "Stop after this many frames.") var count: Int?
    @Option(name: .long, help: "Give up after this many seconds without a message.") var timeout: Double = 30
    @Flag(name: .long, help: "Print a summary only.") var quiet = false

    func run() throws {
        bootstrapLogging(verbose: false)
        let sub: BusSubscriber
        do {
            try output.check(outputs: [out], inputs: [])
            var topics = [topic ?? ""]
            if topic != nil { topics.append("run") }
            sub = try BusSubscriber(endpoint: endpoint, topics: topics)
        } catch { throw fail(error) }
        var frames = 0
        var missing = 0
        var gaps = 0
        var sawStart = false
        var beforeStart = 0
        var lastSeq: [String: Int] = [:]
        var writer: OMETiffWriter?
        var run: String?
        while true {
            guard let item = try sub.next(timeoutMs: Int(timeout * 1000)) else {
                FileHandle.standardError.write(Data("no message for \(timeout) s; giving up\n".utf8))
                break
            }
            switch item {
            case .run(.start(let s), let json):
                if run == s.run { continue }  // a replay for a newer subscriber
                run = s.run
                sawStart = true
                if !quiet { print("start run=\(s.run) \(String(decoding: json, as: UTF8.self))") }
                if let out, writer == nil {
                    let layout = RecordingLayout(
                        run: s.run, name: s.protocolName, mode: s.mode, channels: s.channels.map(\.name),
                        excitationNm: [], emissionNm: s.channels.map(\.emissionNm),
                        timepoints: s.shape["t"] ?? 1, zPlanes: s.shape["z"] ?? 1, angles: s.shape["angles"] ?? 1,
                        phases: s.shape["phases"] ?? 1, width: s.shape["width"] ?? 0,
                        height: s.shape["height"] ?? 0,
                        pixel: s.pixel, pixelSizeUm: s.pixelSizeUm, zStepUm: 0, objectiveNA: s.objectiveNA,
                        magnification: s.magnification, protocolFile: s.protocolFile, rigFile: "")
                    writer = try OMETiffWriter(path: out, layout: layout)
                }
            case .run(.stop(let stop), let json):
                if !quiet { print("stop  run=\(stop.run) \(String(decoding: json, as: UTF8.self))") }
                if stop.run == run || run == nil { return finish(writer, frames, missing, gaps, beforeStart, sub) }
            case .frame(let h, let payload):
                guard sawStart else { beforeStart += 1; continue }
                let key = Wire.topic(for: h)
                if let last = lastSeq[key], h.seq != last + 1 { gaps += 1 }
                lastSeq[key] = h.seq
                frames += 1
                if h.missing { missing += 1 }
                if !quiet {
                    print(
                        "\(key) seq=\(h.seq) t=\(h.t) z=\(h.z) angle=\(h.angle) phase=\(h.phase) \(h.width)x\(h.height) \(h.pixel.rawValue)\(h.missing ? " MISSING" : "") pattern=\(h.state.pattern)"
                    )
                }
                if let w = writer {
                    var hh = h
                    hh.index = w.planesWritten
                    try payload.withUnsafeBytes { try w.write(header: hh, payload: $0) }
                }
                if let count, frames >= count { return finish(writer, frames, missing, gaps, beforeStart, sub) }
            }
        }
        finish(writer, frames, missing, gaps, beforeStart, sub)
        throw ExitCode(1)
    }

    private func finish(
        _ w: OMETiffWriter?, _ frames: Int, _ missing: Int, _ gaps: Int, _ before: Int, _ sub: BusSubscriber
    ) {
        if let w { _ = try? w.finish() }
        print(
            "received \(frames) frames, \(missing) missing, \(gaps) sequence gaps, \(sub.malformed) malformed messages skipped\(before > 0 ? ", \(before) before start ignored" : "")"
        )
    }
}
