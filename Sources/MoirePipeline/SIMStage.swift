import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireReconstruction
import MoireStorage
import MoireTransport

extension LiveReconstructionSpec {
    /// The camera background the reconstruction subtracts: the protocol's, else the camera profile's offset.
    func backgroundADU(cameraOffsetADU: Double) -> Double {
        guard let given = backgroundADU, given > 0 else { return cameraOffsetADU }
        return given
    }

    /// The 2D-SIM options this block asks for, on a camera with `cameraOffsetADU`.
    func sim2DOptions(cameraOffsetADU: Double) -> SIM2DOptions {
        var options = SIM2DOptions()
        options.wiener = wiener
        options.suppression = suppression
        options.background = backgroundADU(cameraOffsetADU: cameraOffsetADU)
        return options
    }

    /// The settings every SR and WF frame's header names (the same for the whole run): the filter,
    /// and the camera background subtracted from the raw frames (ADU; `wf` frames are without it).
    func headerParameters(cameraOffsetADU: Double) -> [String: String] {
        [
            "wiener": wiener.description, "suppression": suppression.description,
            "background": String(backgroundADU(cameraOffsetADU: cameraOffsetADU)),
        ]
    }
}

/// A phase set the live SIM stage reconstructed: its channel, the sequence number of its SR frame,
/// its raw frames (ADU) and the parameters it was reconstructed with.
struct ReconstructedSet {
    var channel: Int
    var srSeq: Int
    var frames: [[Float]]
    var parameters: SIMParameters
}

/// Counters of the live SIM stage.
public struct SIMStageCounters: Sendable, Equatable {
    public var setsComplete = 0
    public var reconstructed = 0
    /// Complete sets dropped because the stage was still busy with an earlier one.
    public var skippedBehind = 0
    /// Sets with a missing frame: never reconstructed.
    public var skippedMissing = 0
    public var estimates = 0
    public var flaggedEstimates = 0
    /// Reconstructed frames not published because subscribers still held every output slot.
    public var publishSkipped = 0
    /// With workers: sets reconstructed by each (`local`: in process while none was connected).
    public var setsByWorker: [String: Int] = [:]
    /// With workers: sets handed to a worker on this machine through the memory it shares with
    /// the broker (a set handed out again after its worker died counts again).
    public var setsThroughSharedMemory = 0
    /// With workers: sets that came back unusable (skipped).
    public var workerFailures = 0
}

/// The live reconstruction stage: assembles phase sets from the raw bus by header indices and
/// reconstructs them on a worker thread, publishing `sr.<channel>` and `wf.<channel>` on its own
/// in-process bus. The receiving thread only copies frames out and releases them, so the
/// recorder never waits. Complete sets wait for the worker in a backlog (the first estimation
/// takes several sets' time; the worker catches up after it); only when the backlog is full is
/// the oldest waiting set skipped, and counted.
// Sendable by hand: mutable state guarded by `done` (DispatchSemaphore), `lock` (NSCondition).
final class SIMStage: BackpressuredStage, @unchecked Sendable {
    let name = "sim"
    /// This stage's latency metric (made once; the backend, when there is one, exists by now).
    private let latency = PipelineMetrics.latency(stage: "sim")
    let bus: RawBus
    var output: RawBus? { bus }
    private let proto: AcquisitionProtocol
    private let options: LiveReconstructionSpec
    /// The settings every SR header names, encoded once.
    private let fixedHeaderParameters: [String: String]
    private let logger: Logger
    private let lock = NSCondition()
    /// Preallocated phase-set buffers: one filling, one pending, one being reconstructed.
    private final class SetBuffer {
        var frames: [[Float]]
        var headers: [FrameHeader?]
        var received: [Bool]
        var key = ""
        init(frames: Int, pixels: Int) {
            self.frames = [[Float]](repeating: [Float](repeating: 0, count: pixels), count: frames)
            headers = [FrameHeader?](repeating: nil, count: frames)
            received = [Bool](repeating: false, count: frames)
        }
    }
    private var buffers: [SetBuffer] = []
    private var free: [Int] = []
    private var filling: [String: Int] = [:]
    /// Complete sets waiting for the worker, oldest first (at most `backlogSets` unless `lossless`).
    private var pendingSets: [Int] = []
    /// How many complete sets may wait for the worker: enough to cover the first estimation
    /// (about 0.3 s at 512², several sets at camera speed) and catch up after it.
    let backlogSets: Int
    /// Never skip a set (LLS-SIM volumes need every plane): buffers are added instead, and the
    /// receiving thread's backlog waits in the in-process bus's queue (the recorder never waits).
    var lossless = false
    /// In virtual time: a set that finds no free buffer waits for the worker to hand one back
    /// instead of dropping the oldest waiting set. The wait holds the reader, whose queue holds
    /// pool slots, so the simulated camera waits too: a simulated run skips no set, whatever the
    /// machine's load (the clock contract, docs/architecture.md).
    var backpressure = Backpressure.drop
    private var finished = false
    /// Output pools for sr and wf frames (preallocated; a frame finds no slot only when subscribers lag).
    private let srPool: FramePool
    private let wfPool: FramePool
    private var reconstructors: [Int: SIM2DReconstructor] = [:]
    private var params: [Int: SIMParameters] = [:]
    private(set) var counters = SIMStageCounters() {
        didSet {
            // The same figures as swift-metrics counters (a backend, when one is bootstrapped, exports them).
            let d = counters
            let o = oldValue
            if d.reconstructed > o.reconstructed {
                PipelineMetrics.simReconstructed.increment(by: d.reconstructed - o.reconstructed)
            }
            if d.skippedBehind > o.skippedBehind {
                PipelineMetrics.simSkippedBehind.increment(by: d.skippedBehind - o.skippedBehind)
            }
            if d.skippedMissing > o.skippedMissing {
                PipelineMetrics.simSkippedMissing.increment(by: d.skippedMissing - o.skippedMissing)
            }
        }
    }
    private var srSeq = 0, wfSeq = 0
    private let done = DispatchSemaphore(value: 0)
    /// Where SR frames are recorded (`reconstruction.record`); the pipeline attaches the recorder.
    private(set) var recordPath: String?
    /// An SR recorder reads this stage's output: a frame waits for an output slot rather than go unrecorded.
    var recorded = false
    private var runID = ""
    /// With `reconstruction.workers`: the broker the sets go through (nil: reconstructed here).
    let broker: WorkBroker?
    private var sent: [Int: SentSet] = [:]
    private var nextSequence = 0
    private var submissionsEnded = false
    private let collected = DispatchSemaphore(value: 0)
    /// Sets out at workers at once: enough to keep every worker busy while results come back.
    private var maxInFlight: Int {
        switch options.workers {
        case .count(let n): return 2 * n + 2
        default: return 8
        }
    }
    /// Called for each reconstructed set with its channel, the sequence number its SR frame is
    /// published with, its raw frames (ADU) and parameters, before that SR frame is published (the
    /// live SIM denoiser adapts on the sets and denoises each SR frame's set).
    var onSet: ((_ set: ReconstructedSet) -> Void)?

    /// A new reconstructor configured like this stage's for `channel` (one per thread).
    func makeReconstructor(channel: Int) throws -> SIM2DReconstructor {
        guard let r = reconstructors[channel] else { throw MoireError(.usage, "no channel \(channel)") }
        return try SIM2DReconstructor(
            width: r.width, height: r.height, pixelUm: r.pixelUm, angles: r.angles, phases: r.phases,
            otf: r.otf, options: r.options)
    }

    init(protocol p: AcquisitionProtocol, options: LiveReconstructionSpec, recordingPath: String?, logger: Logger)
        throws
    {
        proto = p
        self.options = options
        fixedHeaderParameters = options.headerParameters(cameraOffsetADU: p.rig.cameraProfile.offsetADU)
        broker = try WorkBroker.forReconstruction(options)
        self.logger = logger
        bus = try RawBus()
        let per = p.angles * p.phases
        let pixels = p.roiWidth * p.roiHeight
        buffers = (0..<3).map { _ in SetBuffer(frames: per, pixels: pixels) }
        free = [0, 1, 2]
        backlogSets = options.backlogSets
        srPool = FramePool(slots: 4, bytes: 4 * pixels * 4)
        wfPool = FramePool(slots: 4, bytes: pixels * 4)
        if options.record, let r = recordingPath {
            recordPath = RecordingFormat.derivedPath(of: r, stream: "sr")
        }
        let measured = try p.rig.otfFile.map { try MeasuredRadialOTF.load($0) }
        for (c, ch) in p.channels.enumerated() {
            let otf: RadialOTF =
                measured
                ?? IdealOTF(na: p.rig.optics.objectiveNA, emissionNm: ch.emissionNm, attenuation: p.rig.otfAttenuation)
            reconstructors[c] = try SIM2DReconstructor(
                width: p.roiWidth, height: p.roiHeight, pixelUm: p.pixelSizeUm, angles: p.angles,
                phases: p.phases, otf: otf,
                options: options.sim2DOptions(cameraOffsetADU: p.rig.cameraProfile.offsetADU),
                rigor: .fromWisdom)
        }
    }

    deinit { broker?.stop() }

    /// Starts the worker (and with workers, the collector, after waiting a while for the number
    /// of workers the protocol names); the graph has connected every reader of `bus`.
    func start() {
        if let broker {
            if case .count(let expected) = options.workers {
                // A hang watchdog, not a speed assumption: sets run in process until workers come.
                let deadline = Date().addingTimeInterval(30)
                while broker.liveWorkers < expected, Date() < deadline { usleep(10_000) }
                logger.info(
                    "SIM workers connected", metadata: ["workers": "\(broker.liveWorkers)", "expected": "\(expected)"])
            }
            let collector = Thread { [self] in collect(from: broker) }
            collector.name = "moire.stage.sim.collect"
            collector.start()
        }
        let t = Thread { [self] in work() }
        t.name = "moire.stage.sim"
        t.start()
    }

    var report: StageReport {
        lock.lock()
        let c = counters
        lock.unlock()
        return StageReport(
            counters: [
                StageCounter(name: "sets", value: c.setsComplete),
                StageCounter(name: "reconstructed", value: c.reconstructed),
                StageCounter(name: "skipped.behind", value: c.skippedBehind),
                StageCounter(name: "skipped.missing", value: c.skippedMissing),
                StageCounter(name: "estimates", value: c.estimates),
                StageCounter(name: "publish.skipped", value: c.publishSkipped),
                StageCounter(name: "sets.shared.memory", value: c.setsThroughSharedMemory),
            ]
                + c.setsByWorker.sorted { $0.key < $1.key }.map {
                    StageCounter(name: "sets.by.\($0.key)", value: $0.value)
                },
            details: c)
    }

    /// The layout of the SR recording, from the first SR frame.
    func srLayout(_ first: FrameHeader) -> RecordingLayout {
        proto.derivedLayout(first: first, name: "SR of \(proto.name)", mode: "sim2d-sr")
    }

    /// Receiver side: called on the raw-bus reader thread for every item.
    func receive(_ item: BusItem, fromInput input: Int) -> Bool {
        switch item {
        case .run(.start(let start), let json):
            runID = start.run
            try? bus.publishRun(json)
            return true
        case .run(.stop, _):
            lock.lock()
            finished = true
            lock.broadcast()
            lock.unlock()
            return false
        case .frame(let h, let payload):
            guard h.stream == "raw" else { return true }
            let per = proto.angles * proto.phases
            let key = "\(h.t)/\(h.c)/\(h.z)"
            let slot = h.angle * proto.phases + h.phase
            guard slot >= 0, slot < per else { return true }
            lock.lock()
            var index = filling[key]
            if index == nil {
                if free.isEmpty, lossless || pendingSets.count < backlogSets {
                    // One filling, the backlog, one being reconstructed: buffers grow to that and no further.
                    buffers.append(SetBuffer(frames: per, pixels: proto.roiWidth * proto.roiHeight))
                    free.append(buffers.count - 1)
                } else if free.isEmpty, backpressure == .block {
                    // A hang watchdog only: the worker hands a buffer back after each set.
                    if !lock.waitUnderHangWatchdog(while: { free.isEmpty }) {
                        logger.error("no SIM set buffer came back (hang watchdog); the oldest waiting set dropped")
                        free.append(pendingSets.removeFirst())
                        counters.skippedBehind += 1
                    }
                } else if free.isEmpty, !pendingSets.isEmpty {
                    // The worker is behind: the waiting set is dropped for the newer one.
                    free.append(pendingSets.removeFirst())
                    counters.skippedBehind += 1
                }
                if let f = free.popLast() {
                    index = f
                    filling[key] = f
                    let b = buffers[f]
                    b.key = key
                    for i in 0..<per { b.headers[i] = nil; b.received[i] = false }
                }
            }
            lock.unlock()
            guard let index else { return true }  // no buffer: this set is skipped (counted when it ends)
            let b = buffers[index]
            b.headers[slot] = h
            if !h.missing, payload.count == h.byteCount {
                let n = h.width * h.height
                payload.withUnsafeBytes { bytes in
                    bytes.withMemoryRebound(to: UInt16.self) { src in
                        b.frames[slot].withUnsafeMutableBufferPointer { dst in
                            for i in 0..<n { dst[i] = Float(src[i]) }
                        }
                    }
                }
                b.received[slot] = true
            }
            // The set is over when its last frame (by plan order) has arrived.
            if slot == per - 1 {
                lock.lock()
                filling[key] = nil
                if b.received.allSatisfy({ $0 }) {
                    counters.setsComplete += 1
                    if !lossless, backpressure == .drop, pendingSets.count >= backlogSets {
                        counters.skippedBehind += 1
                        free.append(pendingSets.removeFirst())
                    }
                    pendingSets.append(index)
                    lock.broadcast()
                } else {
                    counters.skippedMissing += 1
                    free.append(index)
                    logger.warning("phase set with a missing frame skipped", metadata: ["set": "\(key)"])
                }
                lock.unlock()
            }
            return true
        }
    }

    private func work() {
        defer { done.signal() }
        while true {
            lock.lock()
            while pendingSets.isEmpty && !finished { lock.wait() }
            guard !pendingSets.isEmpty else { lock.unlock(); break }
            let job = pendingSets.removeFirst()
            let b = buffers[job]  // read under the lock: the receiver may append buffers (lossless)
            lock.unlock()
            process(b.headers.compactMap { $0 }, b.frames)
            lock.lock()
            free.append(job)
            lock.broadcast()
            lock.unlock()
        }
        if let broker {
            lock.lock()
            submissionsEnded = true
            lock.broadcast()
            lock.unlock()
            // A hang watchdog: every set comes back (from a worker, or run here when none is left).
            if collected.wait(timeout: .now() + 600) == .timedOut {
                logger.error("SIM sets still out at workers after 600 s; the run ends without them")
            }
            let brokerCounts = broker.counts
            broker.stop()
            lock.lock()
            counters.setsByWorker = brokerCounts.completedBy
            counters.setsThroughSharedMemory = brokerCounts.sharedMemoryJobs
            lock.unlock()
        }
        let stop = RunStop(
            run: runID, reason: "completed", error: nil, frames: counters.reconstructed,
            missing: counters.skippedMissing,
            planned: 0, stoppedNs: unixTimeNs())
        try? bus.publishRun(Wire.encode(stop))
    }

    private func process(_ headers: [FrameHeader], _ frames: [[Float]]) {
        let h0 = headers[0]
        guard let rec = reconstructors[h0.c] else { return }
        do {
            guard let params = try parameters(channel: h0, frames: frames, reconstructor: rec) else { return }
            if let broker {
                try submit(
                    SentSet(headers: headers, frames: frames, parameters: params, reconstructor: rec), to: broker)
                return
            }
            try publish(headers, frames, params, width: rec.width, height: rec.height) { sr, wf in
                try rec.reconstruct(frames, parameters: params, into: sr.bindMemory(to: Float.self))
                try rec.widefield(frames, into: wf.bindMemory(to: Float.self))
                return rec.lastSpectralModel?.wienerAtCutoff
            }
        } catch {
            logger.error("SIM reconstruction failed; set skipped", metadata: ["error": "\(error)"])
        }
    }

    /// The channel's parameters for this set: estimated when the protocol's policy says so (on
    /// the first set, every N, or when the modulation dropped), else those estimated before.
    private func parameters(channel h0: FrameHeader, frames: [[Float]], reconstructor rec: SIM2DReconstructor) throws
        -> SIMParameters?
    {
        let setIndex = counters.reconstructed + counters.skippedBehind
        var p = params[h0.c]
        let needs: Bool
        switch options.estimation {
        case .every(let sets): needs = p == nil || setIndex % sets == 0
        case .onDrop: needs = p == nil || (p!.angles.map(\.modulation).min() ?? 1) < 0.1
        case .once: needs = p == nil
        }
        if needs, let setName = proto.channels[h0.c].patternSet,
            let set = proto.rig.modulator?.profile.modulator?.patternSet(named: setName)
        {
            p = try rec.estimate(frames, priors: PatternPrior.from(set, angles: proto.angles, phases: proto.phases))
            params[h0.c] = p
            lock.lock()
            counters.estimates += 1
            if p!.flagged { counters.flaggedEstimates += 1 }
            lock.unlock()
            logger.info(
                "SIM parameters estimated",
                metadata: [
                    "channel": "\(h0.channel)", "k": "\(p!.angles.map { String(format: "%.4f", $0.kMagnitude) })",
                    "modulation": "\(p!.angles.map { String(format: "%.2f", $0.modulation) })",
                    "flagged": "\(p!.flagged)",
                ])
        }
        return p
    }

    /// Publishes one set's SR and WF frames (and counts it): `fill` writes them into the output
    /// slots and returns the regularisation at the cutoff that the adaptive filter used.
    private func publish(
        _ headers: [FrameHeader], _ frames: [[Float]], _ params: SIMParameters, width: Int, height: Int,
        fill: (_ sr: UnsafeMutableRawBufferPointer, _ wf: UnsafeMutableRawBufferPointer) throws -> Double?
    ) throws {
        let h0 = headers[0]
        // Lossless (LLS-SIM volumes) or recorded: wait up to 10 s for readers to hand a slot back rather
        // than skip; in virtual time as long as they take (up to the hang watchdog).
        let waitSeconds: Double? = backpressure == .block ? hangWatchdogSeconds : (lossless || recorded ? 10 : nil)
        func acquire(_ pool: FramePool) -> FrameSlot? {
            guard let waitSeconds else { return pool.acquire() }
            return pool.acquire(waitingUpToSeconds: waitSeconds)
        }
        guard let srSlot = acquire(srPool) else {
            lock.lock()
            counters.publishSkipped += 1
            lock.unlock()
            return
        }
        guard let wfSlot = acquire(wfPool) else {
            srSlot.release()
            lock.lock()
            counters.publishSkipped += 1
            lock.unlock()
            return
        }
        // The slots go back to their pools on any error; publishing hands them to the bus.
        var srOwned = true
        var wfOwned = true
        defer {
            if srOwned { srSlot.release() }
            if wfOwned { wfSlot.release() }
        }
        var wienerAtCutoff: Double?
        try srSlot.withBytes { sr in try wfSlot.withBytes { wf in wienerAtCutoff = try fill(sr, wf) } }
        var srh = FrameHeader(
            stream: "sr", run: h0.run, seq: srSeq, index: srSeq, t: h0.t, channel: h0.channel, c: h0.c, angle: 0,
            phase: 0, z: h0.z, width: 2 * width, height: 2 * height, pixel: .float32, pixelSizeUm: h0.pixelSizeUm / 2,
            exposureStartNs: h0.exposureStartNs, state: h0.state)
        srh.inputs = headers.map(\.seq)
        srh.params = paramStrings(params, wienerAtCutoff: wienerAtCutoff)
        var wfh = srh
        wfh.stream = "wf"
        wfh.seq = wfSeq
        wfh.index = wfSeq
        wfh.width = width
        wfh.height = height
        wfh.pixelSizeUm = h0.pixelSizeUm
        onSet?(ReconstructedSet(channel: h0.c, srSeq: srSeq, frames: frames, parameters: params))
        srOwned = false
        try bus.publish(Frame(header: srh, slot: srSlot))
        wfOwned = false
        try bus.publish(Frame(header: wfh, slot: wfSlot))
        srSeq += 1
        wfSeq += 1
        PipelineMetrics.record(latency, sincePublishedNs: headers.map(\.publishedNs).max() ?? 0)
        lock.lock()
        counters.reconstructed += 1
        lock.unlock()
    }

    // MARK: sets reconstructed by workers

    /// A set handed to the broker, kept until its result comes back.
    private struct SentSet {
        var headers: [FrameHeader]
        var frames: [[Float]]
        var parameters: SIMParameters
        var reconstructor: SIM2DReconstructor
    }

    /// Hands a set to the broker, waiting while `maxInFlight` sets are out.
    private func submit(_ set: SentSet, to broker: WorkBroker) throws {
        let item = try SIMJob(reconstructor: set.reconstructor, parameters: set.parameters)
            .item(sequence: 0, frames: set.frames, pixel: .uint16)
        lock.lock()
        while sent.count >= maxInFlight { lock.wait() }
        let sequence = nextSequence
        nextSequence += 1
        sent[sequence] = set
        lock.unlock()
        broker.submit(WorkItem(sequence: sequence, parts: item.parts))
    }

    /// The collector's thread: results in set order, published as they come.
    private func collect(from broker: WorkBroker) {
        defer { collected.signal() }
        while true {
            if let result = broker.nextResult(timeoutMs: 100) {
                lock.lock()
                let set = sent.removeValue(forKey: result.sequence)
                lock.broadcast()
                lock.unlock()
                guard let set else { continue }
                do {
                    let output = try SIMJob.Output(
                        result, width: set.reconstructor.width, height: set.reconstructor.height)
                    try publish(
                        set.headers, set.frames, set.parameters, width: set.reconstructor.width,
                        height: set.reconstructor.height
                    ) { sr, wf in
                        output.sr.copyBytes(to: sr)
                        output.widefield.copyBytes(to: wf)
                        return output.wienerAtCutoff
                    }
                } catch {
                    lock.lock()
                    counters.workerFailures += 1
                    lock.unlock()
                    logger.error(
                        "a set came back from its worker unusable; skipped",
                        metadata: ["set": "\(result.sequence)", "error": "\(error)"])
                }
                continue
            }
            lock.lock()
            let over = submissionsEnded && sent.isEmpty
            lock.unlock()
            if over { return }
        }
    }

    private func paramStrings(_ p: SIMParameters, wienerAtCutoff: Double?) -> [String: String] {
        var d: [String: String] = [:]
        for (a, ap) in p.angles.enumerated() {
            d["angle\(a).k"] = String(format: "%.5f,%.5f", ap.kx, ap.ky)
            d["angle\(a).modulation"] = String(format: "%.3f", ap.modulation)
            d["angle\(a).phases"] = ap.phases.map { String(format: "%.4f", $0) }.joined(separator: ",")
            d["angle\(a).source"] = ap.flagged ? "\(ap.source) (flagged: \(ap.reason ?? ""))" : ap.source
        }
        d.merge(fixedHeaderParameters) { _, fixed in fixed }
        if let wienerAtCutoff {
            d["wiener.atCutoff"] = String(format: "%.4g", wienerAtCutoff)
        }
        return d
    }

    /// Waits for the worker to finish after the run's stop.
    func join(timeoutSeconds: Double) -> Bool { done.wait(timeout: .now() + timeoutSeconds) == .success }
}
