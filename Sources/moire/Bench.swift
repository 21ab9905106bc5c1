import ArgumentParser
import Foundation
import MoirePipeline

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks; each figure is printed beside a peer measured in the same run.")
    @Argument(help: "What to measure: transport.") var what: String
    @Option(name: .long, help: "Frames per measurement.") var frames = 2000
    @Option(name: .long, help: "Protocol for the camera measurement.") var protocolFile = "sim-hardware/protocols/tirf-sim.yaml"

    func run() throws {
        bootstrapLogging(verbose: false)
        guard what == "transport" else {
            throw fail(MoireError.usage("unknown benchmark '\(what)'; available: transport"))
        }
        do {
            let dir = NSTemporaryDirectory() + "moire-bench-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let (bus, mem) = try TransportBench.busThroughput(frames: frames)
            print(String(format: "raw bus (in-process, zero-copy, 512×512 uint16): %.2f GB/s   peer memcpy per frame: %.2f GB/s   ratio %.2f", bus, mem, bus / mem))
            let cam = try TransportBench.cameraWithRecording(protocolFile: protocolFile, frames: min(frames, 900), dir: dir)
            let file = try TransportBench.fileWrite(frames: frames, bytes: 512 * 512 * 2, dir: dir)
            print(String(format: "simulated camera 512×512 with recording: %.1f frames/s sustained, %d lost of %d   peer plain write(2): %.1f frames/s   ratio %.3f",
                         cam.fps, cam.lost, cam.delivered + cam.lost, file, cam.fps / file))
        } catch { throw fail(error) }
    }
}

import MoireCore
extension MoireError {
    static func usage(_ m: String) -> MoireError { MoireError(.usage, m) }
}
