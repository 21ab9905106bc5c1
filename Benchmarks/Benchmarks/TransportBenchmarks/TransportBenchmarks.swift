import Benchmark
import MoirePipeline

/// The raw bus against a memcpy-per-frame peer, as `moire bench transport` prints it.
let benchmarks: @Sendable () -> Void = {
    Benchmark("raw bus 512×512 zero-copy (1000 frames)", configuration: .init(metrics: [.wallClock, .throughput], maxIterations: 20)) { b in
        for _ in b.scaledIterations {
            let r = try TransportBench.busThroughput(frames: 1000)
            blackHole(r)
        }
    }
}
