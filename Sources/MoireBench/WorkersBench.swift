import Foundation
import MoireCore
import MoirePipeline
import MoireReconstruction
import MoireTransport

/// `moire bench workers`: SR frames per second through the work broker with 1, 2 and 4 workers
/// (threads of this process, each with its own reconstructor, over an ipc socket: the transport
/// and broker are real, only the machine is shared) beside the same sets reconstructed in process;
/// and the round trip the broker adds to one set, beside a bare request–reply of the same bytes.
public enum WorkersBench {
    public struct Row: Sendable {
        public var size: Int
        public var workers: Int
        public var handover: Handover
        public var srPerSecond: Double
        public var inProcessPerSecond: Double
        /// The median over the rounds of each round's worker rate over its in-process rate (the
        /// two sides take turns round by round, so a round's two figures saw the same load).
        public var ratio: Double
        /// The lower and upper quartiles of the rounds' ratios: how much the machine moved them.
        public var ratioQuartiles: (lower: Double, upper: Double)
        public var rounds: Int
        /// CPU time of the whole process (every thread: broker, workers, ZeroMQ's I/O, the
        /// reconstruction's helpers) per set through the workers and in process: the overhead as
        /// a machine with no idle core would feel it.
        public var cpuMsPerSet: Double
        public var inProcessCPUMsPerSet: Double
        /// Bytes of one job (the set's raw frames as uint16, and its description).
        public var jobBytes: Int
    }

    /// How a benchmark's jobs and results travel between broker and worker.
    public enum Handover: String, Sendable, CaseIterable {
        /// Through the memory a worker on the broker's machine shares with it.
        case sharedMemory = "shared memory"
        /// In the messages themselves, as to a worker on another machine.
        case messages = "in messages"

        /// The memory a benchmark's worker offers its broker (none: it sends everything).
        var sharedMemoryBytes: Int { self == .sharedMemory ? WorkWorker.defaultSharedMemoryBytes : 0 }
        /// A short name for the benchmark's socket files.
        var socketTag: String { self == .sharedMemory ? "shm" : "msg" }
    }

    public struct Latency: Sendable {
        public var size: Int
        public var handover: Handover
        public var brokerP50Ms: Double
        public var brokerP99Ms: Double
        public var bareP50Ms: Double
        public var bareP99Ms: Double
        /// Sets per second the broker moves to an echo worker with 8 in flight: its ceiling.
        public var echoSetsPerSecond: Double
        public var jobBytes: Int
    }

    /// A synthetic phase set of `size`²: beads under a 3 × 3 pattern near the cutoff, with noise.
    static func phaseSet(size: Int) -> (frames: [[Float]], parameters: SIMParameters) {
        let priors = PatternPrior.regular(periodUm: 0.2, firstAngleDeg: 8, angles: 3, phases: 3, modulation: 0.8)
        var generator = SystemRandomNumberGenerator()
        let beads = (0..<(size * size / 400)).map { _ in
            (
                Double.random(in: 0..<Double(size), using: &generator),
                Double.random(in: 0..<Double(size), using: &generator)
            )
        }
        var specimen = [Double](repeating: 0, count: size * size)
        for (bx, by) in beads {
            for y in max(0, Int(by) - 3)...min(size - 1, Int(by) + 3) {
                for x in max(0, Int(bx) - 3)...min(size - 1, Int(bx) + 3) {
                    let r2 = (Double(x) - bx) * (Double(x) - bx) + (Double(y) - by) * (Double(y) - by)
                    specimen[y * size + x] += exp(-r2 / 2.5)
                }
            }
        }
        let pixelUm = 0.065
        var frames: [[Float]] = []
        for prior in priors {
            for phase in prior.phases {
                var frame = [Float](repeating: 0, count: size * size)
                for y in 0..<size {
                    for x in 0..<size {
                        let arg = 2 * .pi * (prior.kx * Double(x) + prior.ky * Double(y)) * pixelUm + phase
                        let light = 1 + prior.modulation * cos(arg)
                        frame[y * size + x] = Float((100 + 300 * specimen[y * size + x] * light).rounded())
                    }
                }
                frames.append(frame)
            }
        }
        return (frames, SIMParameters.fromPriors(priors))
    }

    static func reconstructor(size: Int) throws -> SIM2DReconstructor {
        var options = SIM2DOptions()
        options.background = 100
        return try SIM2DReconstructor(
            width: size, height: size, pixelUm: 0.065, angles: 3, phases: 3,
            otf: IdealOTF(na: 1.49, emissionNm: 525), options: options, rigor: .fromWisdom)
    }

    /// SR frames per second for each worker count and size, beside in process. The two take turns
    /// in short rounds of `setsPerRound` sets, which of them goes first alternating, so that a
    /// round's two figures see the same load on a shared machine; the ratio is the median of the
    /// rounds' ratios. On a shared 2-core VM one round's figures move by ±30 % within seconds, so
    /// the median needs many rounds (40 by default) to settle within a few hundredths.
    public static func throughput(
        sizes: [Int], workers: [(count: Int, handover: Handover)], setsPerRound: (Int) -> Int, rounds: Int = 40,
        dir: String
    ) throws -> [Row] {
        var rows: [Row] = []
        for size in sizes {
            let share = setsPerRound(size)
            let sets = share * rounds
            let (frames, parameters) = phaseSet(size: size)
            let local = try reconstructor(size: size)
            _ = try local.reconstruct(frames, parameters: parameters)
            func runInProcess(_ count: Int) throws -> TimeInterval {
                let started = Date()
                for _ in 0..<count {
                    _ = try local.reconstruct(frames, parameters: parameters)
                    _ = try local.widefield(frames)
                }
                return Date().timeIntervalSince(started)
            }
            let job = SIMJob(reconstructor: local, parameters: parameters)
            let template = try job.item(sequence: 0, frames: frames, pixel: .uint16)
            for (count, handover) in workers {
                let endpoint = "ipc://\(dir)/bench-\(size)-\(count)-\(handover.socketTag).sock"
                let broker = try WorkBroker(endpoint: endpoint) { _ in
                    throw MoireError(.usage, "no in-process fallback in the benchmark")
                }
                let workers = try (0..<count).map { index in
                    let processor = SIMWorkProcessor()
                    let resultMemory = WorkResultMemory()
                    return try WorkWorker(
                        endpoint: endpoint, name: "bench\(index)", sharedMemoryBytes: handover.sharedMemoryBytes,
                        resultMemory: resultMemory
                    ) {
                        try processor.process($0, resultMemory: resultMemory)
                    }
                }
                for worker in workers { try worker.start() }
                let deadline = Date().addingTimeInterval(60)
                while broker.liveWorkers < count, Date() < deadline { usleep(5000) }
                // Warm-up: each worker plans its transforms on its first set.
                for sequence in 0..<count { broker.submit(WorkItem(sequence: sequence, parts: template.parts)) }
                for _ in 0..<count {
                    guard let result = broker.nextResult(timeoutMs: 120_000) else {
                        throw MoireError(.deadline, "a warm-up set did not come back within 120 s")
                    }
                    _ = try SIMJob.Output(result, width: size, height: size)
                }
                var inProcessSeconds: TimeInterval = 0
                var workerSeconds: TimeInterval = 0
                var roundRatios: [Double] = []
                var sequence = count
                let limit = 2 * count + 2
                func runThroughWorkers(_ count: Int) throws -> TimeInterval {
                    let begin = Date()
                    let first = sequence
                    var received = 0
                    while received < count {
                        while sequence - first - received < limit, sequence - first < count {
                            broker.submit(WorkItem(sequence: sequence, parts: template.parts))
                            sequence += 1
                        }
                        guard let result = broker.nextResult(timeoutMs: 120_000) else {
                            throw MoireError(.deadline, "a benchmark set did not come back within 120 s")
                        }
                        // A set that failed comes back empty: the figure would be a failure rate.
                        _ = try SIMJob.Output(result, width: size, height: size)
                        received += 1
                    }
                    return Date().timeIntervalSince(begin)
                }
                var inProcessCPU: TimeInterval = 0
                var workerCPU: TimeInterval = 0
                /// One side's round: its wall time, its CPU time added to `cpu`.
                func timed(_ side: (Int) throws -> TimeInterval, cpu: inout TimeInterval) rethrows -> TimeInterval {
                    let started = processCPUSeconds()
                    let seconds = try side(share)
                    cpu += processCPUSeconds() - started
                    return seconds
                }
                for round in 0..<rounds {
                    let inProcessRound: TimeInterval
                    let workerRound: TimeInterval
                    if round.isMultiple(of: 2) {
                        inProcessRound = try timed(runInProcess, cpu: &inProcessCPU)
                        workerRound = try timed(runThroughWorkers, cpu: &workerCPU)
                    } else {
                        workerRound = try timed(runThroughWorkers, cpu: &workerCPU)
                        inProcessRound = try timed(runInProcess, cpu: &inProcessCPU)
                    }
                    inProcessSeconds += inProcessRound
                    workerSeconds += workerRound
                    roundRatios.append(inProcessRound / workerRound)
                }
                let rate = Double(sets) / workerSeconds
                for worker in workers { worker.stop() }
                broker.stop()
                let inProcess = Double(sets) / inProcessSeconds
                rows.append(
                    Row(
                        size: size, workers: count, handover: handover, srPerSecond: rate,
                        inProcessPerSecond: inProcess,
                        ratio: median(roundRatios), ratioQuartiles: quartiles(roundRatios), rounds: rounds,
                        cpuMsPerSet: 1000 * workerCPU / Double(sets),
                        inProcessCPUMsPerSet: 1000 * inProcessCPU / Double(sets),
                        jobBytes: template.parts.map(\.count).reduce(0, +)))
            }
        }
        return rows
    }

    /// User and system CPU seconds of this process so far, all threads.
    static func processCPUSeconds() -> TimeInterval {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> TimeInterval { TimeInterval(time.tv_sec) + TimeInterval(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// The round trip of one set's bytes through the broker to an echo worker, one at a time,
    /// beside a bare REQ–REP pair on the same kind of socket; the job handed over as `handover` says.
    public static func latency(size: Int, samples: Int, handover: Handover, dir: String) throws -> Latency {
        let (frames, parameters) = phaseSet(size: size)
        let template = try SIMJob(reconstructor: try reconstructor(size: size), parameters: parameters)
            .item(sequence: 0, frames: frames, pixel: .uint16)
        let endpoint = "ipc://\(dir)/latency-\(size)-\(handover.socketTag).sock"
        let broker = try WorkBroker(endpoint: endpoint) { $0 }
        let echo = try WorkWorker(endpoint: endpoint, name: "echo", sharedMemoryBytes: handover.sharedMemoryBytes) {
            WorkItem(sequence: $0.sequence, parts: [Data([1])])
        }
        try echo.start()
        let deadline = Date().addingTimeInterval(60)
        while broker.liveWorkers < 1, Date() < deadline { usleep(5000) }
        var brokerMs: [Double] = []
        for sequence in 0..<samples {
            let begin = DispatchTime.now().uptimeNanoseconds
            broker.submit(WorkItem(sequence: sequence, parts: template.parts))
            guard broker.nextResult(timeoutMs: 60_000) != nil else {
                throw MoireError(.deadline, "an echo did not come back within 60 s")
            }
            brokerMs.append(Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e6)
        }
        // The broker's ceiling: sets moved per second with 8 in flight (the echo does no work).
        let begin = Date()
        var submitted = samples
        var received = samples
        while received < 2 * samples {
            while submitted - received < 8, submitted < 2 * samples {
                broker.submit(WorkItem(sequence: submitted, parts: template.parts))
                submitted += 1
            }
            guard broker.nextResult(timeoutMs: 60_000) != nil else {
                throw MoireError(.deadline, "an echo did not come back within 60 s")
            }
            received += 1
        }
        let echoRate = Double(samples) / Date().timeIntervalSince(begin)
        echo.stop()
        broker.stop()

        let bareEndpoint = "ipc://\(dir)/bare-\(size)-\(handover.socketTag).sock"
        let server = Thread {
            guard let replier = try? ZMQSocket(.shared, type: .rep), (try? replier.bind(bareEndpoint)) != nil else {
                return
            }
            for _ in 0..<samples {
                guard (try? replier.receive()) != nil else { return }
                try? replier.send([.bytes(Data([1]))])
            }
        }
        server.start()
        let requester = try ZMQSocket(.shared, type: .req)
        try requester.connect(bareEndpoint)
        var bareMs: [Double] = []
        for _ in 0..<samples {
            let begin = DispatchTime.now().uptimeNanoseconds
            try requester.send(template.parts.map { .bytes($0) })
            _ = try requester.receive()
            bareMs.append(Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e6)
        }
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        return Latency(
            size: size, handover: handover, brokerP50Ms: percentile(brokerMs, 0.5),
            brokerP99Ms: percentile(brokerMs, 0.99),
            bareP50Ms: percentile(bareMs, 0.5), bareP99Ms: percentile(bareMs, 0.99), echoSetsPerSecond: echoRate,
            jobBytes: template.parts.map(\.count).reduce(0, +))
    }
}
