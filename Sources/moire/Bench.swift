import ArgumentParser
import Foundation
import MoireBench
import MoireCore
import MoireDenoise
import MoirePipeline

/// What `moire bench` measures.
enum BenchTarget: String, CaseIterable, ExpressibleByArgument {
    case transport, sim2d, liveSIM = "live-sim", denoise, llsm, usb, workers
}

extension InferenceConvolution: ExpressibleByArgument {}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks; each figure is printed beside a peer measured in the same run.")
    @Argument(help: "What to measure: \(BenchTarget.allCases.map(\.rawValue).joined(separator: ", ")).")
    var what: BenchTarget
    @Option(name: .long, help: "Frames per measurement.") var frames = 2000
    @Option(name: .long, help: "Protocol for the camera measurement.") var protocolFile =
        "sim-hardware/protocols/tirf-sim.yaml"
    @Option(
        name: .long,
        help:
            "The denoiser's 3×3 inference convolutions: winograd (where the CPU has AVX2 and FMA) or direct (oneDNN's)."
    )
    var convolution = InferenceConvolution.winograd

    func run() throws {
        bootstrapLogging(verbose: false)
        Conv2D.inferenceConvolution = convolution
        switch what {
        case .workers: try workers()
        case .liveSIM: try liveSIM()
        case .usb: try usb()
        case .llsm: try llsm()
        case .denoise: try denoise()
        case .sim2d: try sim2d()
        case .transport: try transport()
        }
    }

    /// The raw bus, the simulated camera with its recording, and plain file writes.
    func transport() throws {
        do {
            let dir = NSTemporaryDirectory() + "moire-bench-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let (bus, mem) = try TransportBench.busThroughput(frames: frames)
            print(
                String(
                    format:
                        "raw bus (in-process, zero-copy, 512×512 uint16): %.2f GB/s   peer memcpy per frame: %.2f GB/s   ratio %.2f",
                    bus, mem, bus / mem))
            let cam = try TransportBench.cameraWithRecording(
                protocolFile: protocolFile, frames: min(frames, 900), dir: dir)
            let file = try TransportBench.fileWrite(frames: frames, bytes: 512 * 512 * 2, dir: dir)
            print(
                String(
                    format:
                        "simulated camera 512×512 with recording: %.1f frames/s sustained, %d lost of %d   peer plain write(2): %.1f frames/s   ratio %.3f",
                    cam.fps, cam.lost, cam.delivered + cam.lost, file, cam.fps / file))
        } catch { throw fail(error) }
    }
}

extension Bench {
    /// SR frames per second through the work broker (1, 2, 4 workers) beside in process, and the
    /// round trip the broker adds to one set beside a bare request–reply.
    func workers() throws {
        do {
            let dir = NSTemporaryDirectory() + "moire-bench-workers-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            for size in [512, 1024] {
                for handover in WorkersBench.Handover.allCases {
                    let latency = try WorkersBench.latency(
                        size: size, samples: size == 512 ? 200 : 60, handover: handover, dir: dir)
                    print(
                        String(
                            format:
                                "broker round trip of one %d×%d set (echo worker, ipc, \(handover.rawValue)): p50 %.2f ms, p99 %.2f ms   peer bare REQ-REP of the same bytes: p50 %.2f ms, p99 %.2f ms   ratio (p50) %.2f",
                            size, size, latency.brokerP50Ms, latency.brokerP99Ms, latency.bareP50Ms, latency.bareP99Ms,
                            latency.brokerP50Ms / latency.bareP50Ms))
                    print(
                        String(
                            format:
                                "broker ceiling %d×%d (echo worker, \(handover.rawValue), 8 sets in flight): %.0f sets/s, %.2f GB/s of jobs   peer bare REQ-REP one at a time: %.0f sets/s   ratio %.2f",
                            size, size, latency.echoSetsPerSecond,
                            latency.echoSetsPerSecond * Double(latency.jobBytes) / 1e9, 1000 / latency.bareP50Ms,
                            latency.echoSetsPerSecond * latency.bareP50Ms / 1000))
                }
            }
            for row in try WorkersBench.throughput(
                sizes: [512, 1024],
                workers: [(1, .sharedMemory), (1, .messages), (2, .sharedMemory), (4, .sharedMemory)],
                setsPerRound: { $0 <= 512 ? 4 : 2 }, dir: dir)
            {
                print(
                    String(
                        format:
                            "SIM workers %d×%d, %d worker(s) on this machine, \(row.handover.rawValue) (%.1f MB per set): %.1f SR frames/s   peer in process: %.1f SR frames/s   ratio %.2f (median of %d alternated rounds; quartiles %.2f–%.2f); CPU per set %.1f ms   peer in process: %.1f ms   ratio %.2f",
                        row.size, row.size, row.workers, Double(row.jobBytes) / 1e6, row.srPerSecond,
                        row.inProcessPerSecond, row.ratio, row.rounds, row.ratioQuartiles.lower,
                        row.ratioQuartiles.upper, row.cpuMsPerSet, row.inProcessCPUMsPerSet,
                        row.inProcessCPUMsPerSet / row.cpuMsPerSet))
            }
        } catch { throw fail(error) }
    }

    /// The USB3 Vision driver streaming from the simulated device, beside the bare transfers.
    func usb() throws {
        do {
            for r in try USBBench.run(profileFile: "hardware-profiles/cameras/u3v-generic-scmos.yaml") {
                print(
                    String(
                        format:
                            "usb3vision driver %d×%d Mono16: %.1f frames/s, %.0f MB/s, CPU %.2f ms/frame   peer (transfers read with no driver): %.1f frames/s, %.0f MB/s   ratio %.2f",
                        r.width, r.height, r.driverFPS, r.driverMBps, r.cpuMsPerFrame, r.rawFPS, r.rawMBps,
                        r.driverFPS / r.rawFPS))
            }
        } catch { throw fail(error) }
    }

    /// Runs a peer benchmark script and returns what it printed.
    func runPeer(_ arguments: [String]) throws -> Data {
        let peer = Process()
        peer.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        peer.arguments = arguments
        peer.environment = Runtime.environmentAsGiven
        let out = Pipe()
        peer.standardOutput = out
        peer.standardError = FileHandle.nullDevice
        try peer.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        peer.waitUntilExit()
        return data
    }

    /// Deskew + 10 RL iterations of a 512×512×101 stack, beside numpy + scikit-image on the same stack.
    func llsm() throws {
        do {
            let dir = NSTemporaryDirectory() + "moire-bench-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let r = try LightSheetBench.run(dir: dir)
            let ours = r.deskewSeconds + r.deconvolutionSeconds
            print(
                String(
                    format:
                        "moire llsm %d×%d×%d → deskewed %d×%d×%d: deskew %.2f s + 10 RL iterations %.2f s = %.2f s (set-up once per stack shape — FFTW plans, OTF, buffers — %.2f s, not counted)",
                    r.raw.w, r.raw.h, r.raw.d, r.deskewed.w, r.deskewed.h, r.deskewed.d, r.deskewSeconds,
                    r.deconvolutionSeconds, ours, r.planSeconds))
            let data = try runPeer([
                "python3", "Benchmarks/peers/llsm_peer.py", r.rawPath, r.psfPath, "\(r.raw.w)", "\(r.raw.h)",
                "\(r.raw.d)",
                "\(r.psf.w)", "\(r.psf.h)", "\(r.psf.d)", "\(r.angleDeg)", "\(r.stepUm)", "\(r.pixelUm)", "10",
            ])
            struct Peer: Decodable {
                var deskew_s: Double?; var deconvolution_s: Double?; var total_s: Double?; var error: String?
            }
            guard let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last,
                let p = try? JSONDecoder().decode(Peer.self, from: Data(line.utf8)), let total = p.total_s
            else {
                print("peer: not available (make bench installs scikit-image)")
                return
            }
            print(
                String(
                    format:
                        "peer numpy deskew %.2f s + scikit-image richardson_lucy %.2f s = %.2f s   ratio peer/moire %.1f×",
                    p.deskew_s ?? 0, p.deconvolution_s ?? 0, total, total / ours))
        } catch { throw fail(error) }
    }

    /// The CPU's model and widest vector instruction set (from /proc/cpuinfo): oneDNN's kernels and so
    /// the figures depend on it (AVX-512 against AVX2).
    static func processorLine() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else {
            return "cpu: unknown (no /proc/cpuinfo)"
        }
        let lines = text.split(separator: "\n")
        func field(_ name: String) -> String {
            let line = lines.first { $0.hasPrefix(name) }
            return line.flatMap { $0.split(separator: ":", maxSplits: 1).last }.map {
                $0.trimmingCharacters(in: .whitespaces)
            } ?? "?"
        }
        let flags = Set(field("flags").split(separator: " ").map(String.init))
        let isa =
            flags.contains("avx512f")
            ? "AVX-512" : flags.contains("avx2") ? "AVX2" : flags.contains("avx") ? "AVX" : "SSE"
        let cores = ProcessInfo.processInfo.activeProcessorCount
        return "cpu: \(field("model name")), \(cores) cores, vector ISA \(isa)"
    }

    /// Denoising frames per second at 512×512, beside the same network and step in PyTorch (when
    /// installed), frame by frame in alternation.
    func denoise() throws {
        do {
            print(Self.processorLine())
            let session = try DenoiseBench.Session()
            func ourLine(inferenceMs: Double, adaptedMs: Double) -> String {
                String(
                    format:
                        "moire denoise %d×%d: %.2f frames/s inference; %.2f frames/s with %d adaptation steps (%d crops of %d²) per frame (median frames; 3×3 convolutions %@)",
                    session.size, session.size, 1000 / inferenceMs, 1000 / adaptedMs, session.steps, session.batch,
                    session.crop, session.convolutions)
            }
            let venv = "Benchmarks/.venv/bin/python3"
            let python = FileManager.default.isExecutableFile(atPath: venv) ? venv : "python3"
            let peer: InterleavedPeer
            do {
                peer = try InterleavedPeer([python, "Benchmarks/peers/denoise_peer.py", "--serve"])
            } catch let unavailable as InterleavedPeer.Unavailable {
                let inference = try (0..<20).map { _ in try session.inferenceMs() }
                let adapted = try (0..<20).map { _ in try session.adaptedMs() }
                print(ourLine(inferenceMs: median(inference), adaptedMs: median(adapted)))
                print(
                    "peer: PyTorch not available (\(unavailable.reason); make bench makes Benchmarks/.venv with torch from PyPI)"
                )
                return
            }
            // Two of our frames to one of the peer's (about its time): the first after the peer's
            // finds the caches cold; a live stage denoises frame after frame.
            let rounds = 15
            let oursPerRound = 2
            let inference = try Alternation(
                rounds: rounds, oursPerRound: oursPerRound, ours: session.inferenceMs, peer: peer, task: "inference")
            let adapted = try Alternation(
                rounds: rounds, oursPerRound: oursPerRound, ours: session.adaptedMs, peer: peer, task: "adapted")
            let ours = (inference: median(inference.ours), adapted: median(adapted.ours))
            let theirs = (inference: median(inference.peer), adapted: median(adapted.peer))
            print(ourLine(inferenceMs: ours.inference, adaptedMs: ours.adapted))
            print(
                String(
                    format:
                        "peer %@: %.2f frames/s inference; %.2f frames/s adapted   ratio moire/peer %.2f× and %.2f×   (alternated: %d rounds of %d of ours, 1 of the peer's, each)",
                    peer.name, 1000 / theirs.inference, 1000 / theirs.adapted, theirs.inference / ours.inference,
                    theirs.adapted / ours.adapted, rounds, oursPerRound))
        } catch { throw fail(error) }
    }

    /// A live 512×512 2D-SIM run at 100 raw frames/s with recording: every complete set reconstructed?
    /// Beside it, the share of those sets napari-sim-processor could reconstruct at its measured speed.
    func liveSIM() throws {
        do {
            let dir = NSTemporaryDirectory() + "moire-bench-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let r = try LiveSIMBench.run(protocolFile: protocolFile, rawFramesPerSecond: 100, timepoints: 60, dir: dir)
            let c = r.sets
            let setsPerSecond = Double(c.setsComplete) / r.seconds
            print(
                String(
                    format:
                        "moire live 2D-SIM %d×%d with recording, 100 raw frames/s asked: %.1f raw frames/s over the whole run (%d lost), %d complete phase sets, %d reconstructed, %d skipped behind, %d with a missing frame, %d estimation(s)",
                    r.width, r.width, r.rawFramesPerSecond, r.framesLost, c.setsComplete, c.reconstructed,
                    c.skippedBehind, c.skippedMissing, c.estimates))
            let offline = try SIMBench.prepare(protocolFile: protocolFile, dir: dir)
            let data = try runPeer([
                "python3", "Benchmarks/peers/sim2d_peer.py", offline.rawPath, "\(offline.width)", "\(offline.pixelUm)",
                "\(offline.na)", "0.525", "5",
            ])
            struct Peer: Decodable { var peer: String?; var ms_per_frame: Double?; var error: String? }
            guard let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last,
                let p = try? JSONDecoder().decode(Peer.self, from: Data(line.utf8)), let ms = p.ms_per_frame
            else {
                print("peer: not available (make bench installs napari-sim-processor --no-deps)")
                return
            }
            let ours = Double(c.reconstructed) / Double(max(c.setsComplete, 1))
            let peerShare = min(1, 1000 / ms / setsPerSecond)
            print(
                String(
                    format:
                        "peer %@: %.1f ms per set, so at most %.0f%% of these %.1f sets/s   share reconstructed moire/peer %.2f×",
                    p.peer ?? "?", ms, 100 * peerShare, setsPerSecond, ours / peerShare))
        } catch { throw fail(error) }
    }

    /// Milliseconds per SR frame at 512×512×9 → 1024×1024, beside napari-sim-processor on the
    /// same data, frame by frame in alternation.
    func sim2d() throws {
        do {
            let dir = NSTemporaryDirectory() + "moire-bench-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let session = try SIMBench.prepare(protocolFile: protocolFile, dir: dir)
            func ourLine(_ frameMs: Double) -> String {
                String(
                    format:
                        "moire 2D-SIM %d×%d×9 → %d×%d: %.2f ms per SR frame (median) with fixed parameters (first frame with weights %.1f ms); estimation %.0f ms",
                    session.width, session.width, 2 * session.width, 2 * session.width, frameMs, session.firstFrameMs,
                    session.estimateMs)
            }
            let peer: InterleavedPeer
            do {
                peer = try InterleavedPeer([
                    "python3", "Benchmarks/peers/sim2d_peer.py", session.rawPath, "\(session.width)",
                    "\(session.pixelUm)", "\(session.na)", "0.525", "--serve",
                ])
            } catch let unavailable as InterleavedPeer.Unavailable {
                print(ourLine(median(try (0..<30).map { _ in try session.frameMs() })))
                print(
                    "peer: not available (\(unavailable.reason); make bench installs napari-sim-processor --no-deps and matplotlib)"
                )
                return
            }
            // Four of our frames to one of the peer's (about a third of its time): the first frame
            // after the peer's finds the caches cold and costs ~2 ms more; a live stage
            // reconstructs set after set.
            let rounds = 25
            let oursPerRound = 4
            let alternation = try Alternation(
                rounds: rounds, oursPerRound: oursPerRound, ours: session.frameMs, peer: peer, task: "frame")
            let ours = median(alternation.ours)
            let theirs = median(alternation.peer)
            print(ourLine(ours))
            print(
                String(
                    format:
                        "peer %@: %.2f ms per SR frame (median; calibration %.0f ms)   ratio peer/moire %.1f×   (alternated: %d rounds of %d of ours, 1 of the peer's)",
                    peer.name, theirs, peer.setUpMs ?? 0, theirs / ours, rounds, oursPerRound))
        } catch { throw fail(error) }
    }
}

extension MoireError {
    static func usage(_ m: String) -> MoireError { MoireError(.usage, m) }
}
