import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireFFT
import MoireReconstruction
import MoireStorage
import MoireTransport

/// Counters of the live 3D-SIM stage.
public struct SIM3DStageCounters: Sendable, Equatable {
    public var stacksComplete = 0
    public var volumes = 0
    /// Stacks replaced by a newer one while the worker was busy.
    public var skippedBehind = 0
    /// Stacks with frames that did not come: a phase set with a hole cannot be separated, so the
    /// volume is skipped (counted), never made from shifted frames.
    public var skippedMissing = 0
    /// Parameter estimations (once per channel; again with `estimate: every:N` or `on-drop`).
    public var estimations = 0
    /// With workers: stacks reconstructed by each (`local`: in process while none was connected).
    public var stacksByWorker: [String: Int] = [:]
    /// With workers: stacks that came back unusable (skipped).
    public var workerFailures = 0
}

/// The live 3D-SIM stage (mode sim3d): every time point's z × angle × phase frames of a channel are
/// gathered by their headers (`StackQueue`); the parameters are estimated on the channel's first
/// complete stack (`SIM3DReconstructor.estimate`, seeded by the channel's pattern set — nominal
/// wave vectors, phases and modulations, kz from the laser's wavelength) and reused; each stack is
/// reconstructed into a volume on the 2× lateral grid, published as `sr3d.<channel>` (float32, z
/// slowest, `depth` in the header, the parameters in `params`) with its z projection
/// `mip.<channel>`, and with `reconstruction.record` recorded to `NAME.sr3d.ome.tif`.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
final class SIM3DStage: BackpressuredStage, @unchecked Sendable {
    let name = "sim3d"
    /// This stage's latency metric (made once; the backend, when there is one, exists by now).
    private let latency = PipelineMetrics.latency(stage: "sim3d")
    private let volumesMade = PipelineMetrics.volumes(stage: "sim3d")
    let bus: RawBus
    var output: RawBus? { bus }
    let finishSeconds = 600.0
    /// A recorder reads this stage's volumes: a volume waits for an output slot rather than go unrecorded.
    var recorded: Bool {
        get { volumeOutput.recorded }
        set { volumeOutput.recorded = newValue }
    }
    private let proto: AcquisitionProtocol
    private let logger: Logger
    private let stacks: StackQueue
    /// In virtual time a complete stack waits for the worker instead of replacing one (StackQueue).
    var backpressure: Backpressure {
        get { stacks.backpressure }
        set {
            stacks.backpressure = newValue
            volumeOutput.backpressure = newValue
        }
    }
    private let n: Int, nz: Int, angles: Int, phases: Int
    private let options: LiveReconstructionSpec
    private let lock = NSLock()
    private var own = SIM3DStageCounters()
    private var reconstructors: [Int: (rec: SIM3DReconstructor, parameters: [SIM3DAngle], flagged: [Bool])] = [:]
    private var lastEstimatedT: [Int: Int] = [:]
    /// A stack handed to a worker, kept until its volume comes back.
    private struct SentStack {
        var first: FrameHeader
        var inputs: [Int]
        var parameters: [SIM3DAngle]
        var flagged: [Bool]
        var publishedNs: Int64
    }
    /// With `reconstruction.workers`: the stacks go to workers, at most 4 out at once (nil:
    /// reconstructed here).
    private let work: OrderedWork<SentStack>?
    var broker: WorkBroker? { work?.broker }
    private let volumeOutput: VolumeOutput
    var recordPath: String? { volumeOutput.recordPath }

    var counters: SIM3DStageCounters {
        lock.lock(); defer { lock.unlock() }
        var c = own
        (c.stacksComplete, c.skippedBehind) = stacks.counts
        return c
    }

    /// Refuses a protocol live 3D-SIM cannot reconstruct (before any device is opened or file written).
    static func check(_ p: AcquisitionProtocol) throws {
        guard p.roiWidth == p.roiHeight, p.roiWidth % 2 == 0, p.roiWidth >= 16, p.zPlanes >= 4, p.zPlanes % 2 == 0,
            p.phases >= 5
        else {
            throw MoireError(
                .config,
                "live 3D-SIM needs a square ROI with even sides (≥ 16), an even number of z planes (≥ 4) and ≥ 5 phases; "
                    + "the protocol asks for \(p.roiWidth)×\(p.roiHeight), \(p.zPlanes) planes, \(p.phases) phases "
                    + "(or turn live reconstruction off: reconstruction: {enabled: false})", place: p.file)
        }
        for c in p.channels.indices { _ = try p.sim3dPriors(channel: c) }
    }

    /// For a protocol `check` accepted (the pipeline checks it before opening any device).
    init(protocol p: AcquisitionProtocol, options: LiveReconstructionSpec, recordingPath: String?, logger: Logger)
        throws
    {
        proto = p; self.logger = logger; self.options = options
        n = p.roiWidth; nz = p.zPlanes; angles = p.angles; phases = p.phases
        bus = try RawBus()
        let (a, ph) = (angles, phases)
        work = try WorkBroker.forReconstruction(options).map { OrderedWork(broker: $0, limit: 4) }
        stacks = StackQueue(stream: "raw", slots: nz * angles * phases, width: n, height: n) { h in
            guard h.z >= 0, h.angle >= 0, h.angle < a, h.phase >= 0, h.phase < ph else { return nil }
            return (h.z * a + h.angle) * ph + h.phase
        }
        volumeOutput = VolumeOutput(
            bus: bus, volumeBytes: 4 * n * n * nz * 4, projectionBytes: 4 * n * n * 4,
            recordPath: options.record ? recordingPath.map { RecordingFormat.derivedPath(of: $0, stream: "sr3d") } : nil
        )
    }

    deinit { broker?.stop() }

    func start() {
        work?.start(name: "moire.stage.sim3d.collect", expectedWorkers: options.workers?.expectedCount) {
            [self] result, stack in collect(result, stack)
        }
        stacks.start(
            name: "moire.stage.sim3d", logger: logger, output: volumeOutput, process: { [self] in try process($0) },
            drain: { [self] in drainWorkers() }
        ) { [self] in
            let c = counters
            return (c.volumes, c.skippedBehind + c.skippedMissing)
        }
    }

    func join(timeoutSeconds: Double) -> Bool { stacks.join(timeoutSeconds: timeoutSeconds) }

    func receive(_ item: BusItem, fromInput input: Int) -> Bool { stacks.handle(item) }

    var report: StageReport {
        let c = counters
        return StageReport(
            counters: [
                StageCounter(name: "stacks", value: c.stacksComplete),
                StageCounter(name: "volumes", value: c.volumes),
                StageCounter(name: "skipped.behind", value: c.skippedBehind),
                StageCounter(name: "skipped.missing", value: c.skippedMissing),
                StageCounter(name: "estimations", value: c.estimations),
                StageCounter(name: "worker.failures", value: c.workerFailures),
                StageCounter(name: "unpublished", value: volumeOutput.dropped),
            ], details: c)
    }

    /// The layout of the volume recording, from the first volume's header.
    func volumeLayout(_ first: FrameHeader) -> RecordingLayout {
        proto.derivedLayout(first: first, name: "3D-SIM of \(proto.name)", mode: "sim3d-sr")
    }

    private func process(_ stack: StackQueue.Stack) throws {
        guard let h0 = stack.first else { return }
        if !stack.missing.isEmpty {
            lock.lock(); own.skippedMissing += 1; lock.unlock()
            logger.warning(
                "3D-SIM stack with missing frames skipped",
                metadata: ["t": "\(h0.t)", "missing": "\(stack.missing.count)"])
            return
        }
        let plane = n * n
        // [angle][phase] stacks of n × n × nz from the z × angle × phase slots.
        let (angles, phases) = (self.angles, self.phases)
        let phaseStacks = SIM3DReconstructor.phaseStacks(nz: nz, angles: angles, phases: phases, plane: plane) {
            z, a, p in
            stack.planes[(z * angles + a) * phases + p]
        }
        // `estimate: every:N`: estimated again (from the priors) on the first stack processed N or more
        // time points after the last estimation (stacks skipped while busy do not delay it further).
        // `estimate: on-drop`: estimated again when order 1's modulation under the current parameters
        // falls below 60 % of what the estimation found, in any orientation (the pattern has moved).
        var dropped = false
        if options.estimation == .onDrop, let r = reconstructors[h0.c] {
            for a in 0..<angles where try r.rec.modulation(phaseStacks[a], r.parameters[a]) < 0.6 * r.parameters[a].m1 {
                dropped = true
            }
        }
        var everyTimepoints: Int?
        if case .every(let n) = options.estimation { everyTimepoints = n }
        if dropped || everyTimepoints != nil, let last = lastEstimatedT[h0.c],
            dropped || h0.t - last >= (everyTimepoints ?? .max),
            let r = reconstructors[h0.c]
        {
            let est = try r.rec.estimate(phaseStacks, priors: try proto.sim3dPriors(channel: h0.c))
            reconstructors[h0.c] = (r.rec, est.angles, est.projected.angles.map(\.flagged))
            lastEstimatedT[h0.c] = h0.t
            lock.lock(); own.estimations += 1; lock.unlock()
        }
        if reconstructors[h0.c] == nil {
            let ch = proto.channels[h0.c]
            let rec = try SIM3DReconstructor(
                n: n, nz: nz, pixelUm: proto.pixelSizeUm, dzUm: abs(proto.zStepUm),
                optics: Widefield3D(
                    na: proto.rig.optics.objectiveNA, immersionIndex: proto.rig.optics.immersionIndex,
                    emissionNm: ch.emissionNm))
            rec.background = options.backgroundADU(cameraOffsetADU: proto.rig.cameraProfile.offsetADU)
            rec.wiener = options.wiener
            let est = try rec.estimate(phaseStacks, priors: try proto.sim3dPriors(channel: h0.c))
            reconstructors[h0.c] = (rec, est.angles, est.projected.angles.map(\.flagged))
            lastEstimatedT[h0.c] = h0.t
            lock.lock(); own.estimations += 1; lock.unlock()
            for (a, (e, d)) in zip(est.angles, est.projected.angles).enumerated() {
                logger.info(
                    "3D-SIM parameters estimated",
                    metadata: [
                        "channel": "\(ch.name)", "angle": "\(a)",
                        "k": "\(String(format: "%.4f", hypot(e.kx, e.ky)))",
                        "orientation": "\(String(format: "%.2f", d.angleDeg))",
                        "m1": "\(String(format: "%.2f", e.m1))", "flagged": "\(d.flagged)",
                    ])
            }
        }
        let (rec, parameters, flagged) = reconstructors[h0.c]!
        let inputs = stack.headers.compactMap { $0?.seq }
        let publishedNs = stack.headers.compactMap { $0?.publishedNs }.max() ?? 0
        if let work {
            let job = SIM3DJob(
                reconstructor: rec, phases: phases, emissionNm: proto.channels[h0.c].emissionNm, parameters: parameters)
            work.submit(
                parts: try job.item(sequence: 0, stacks: phaseStacks).parts,
                keeping: SentStack(
                    first: h0, inputs: inputs, parameters: parameters, flagged: flagged, publishedNs: publishedNs))
            return
        }
        try emit(
            try rec.reconstruct(phaseStacks, parameters: parameters), first: h0, inputs: inputs, parameters: parameters,
            flagged: flagged, publishedNs: publishedNs)
    }

    /// Publishes (and with `record`, records) one SR volume and counts it.
    private func emit(
        _ data: [Float], first h0: FrameHeader, inputs: [Int], parameters: [SIM3DAngle], flagged: [Bool],
        publishedNs: Int64
    ) throws {
        let vol = Volume(
            width: 2 * n, height: 2 * n, depth: nz, data: data,
            voxelUm: (proto.pixelSizeUm / 2, proto.pixelSizeUm / 2, abs(proto.zStepUm)))
        var vh = FrameHeader(
            stream: "sr3d", run: h0.run, seq: 0, index: 0, t: h0.t, channel: h0.channel, c: h0.c, angle: 0, phase: 0,
            z: 0, width: vol.width, height: vol.height, pixel: .float32, pixelSizeUm: vol.voxelUm.x,
            exposureStartNs: h0.exposureStartNs, state: h0.state)
        vh.inputs = inputs
        vh.params = [
            "voxelZUm": String(vol.voxelUm.z),
            "k": parameters.map { String(format: "%.5f", hypot($0.kx, $0.ky)) }.joined(separator: ","),
            "orientationDeg": parameters.map { String(format: "%.3f", atan2($0.ky, $0.kx) * 180 / .pi) }.joined(
                separator: ","),
            "kz": parameters.map { String(format: "%.5f", $0.kz) }.joined(separator: ","),
            "m1": parameters.map { String(format: "%.3f", $0.m1) }.joined(separator: ","),
            "m2": parameters.map { String(format: "%.3f", $0.m2) }.joined(separator: ","),
            "flagged": flagged.map { $0 ? "1" : "0" }.joined(separator: ","),
        ]
        try volumeOutput.emit(vol, header: vh)
        lock.lock(); own.volumes += 1; lock.unlock()
        volumesMade.increment()
        PipelineMetrics.record(latency, sincePublishedNs: publishedNs)
    }

    /// A volume back from a worker (in stack order): published, or counted as a failure.
    private func collect(_ result: WorkItem, _ stack: SentStack) {
        do {
            guard result.parts.count == 1, result.parts[0].count == 4 * 4 * n * n * nz else {
                throw MoireError(.format, "the volume of stack \(result.sequence) came back with the wrong size")
            }
            let data = result.parts[0].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            try emit(
                data, first: stack.first, inputs: stack.inputs, parameters: stack.parameters, flagged: stack.flagged,
                publishedNs: stack.publishedNs)
        } catch {
            lock.lock()
            own.workerFailures += 1
            lock.unlock()
            logger.error(
                "a stack came back from its worker unusable; skipped",
                metadata: ["stack": "\(result.sequence)", "error": "\(error)"])
        }
    }

    /// After the last stack: waits until every stack out at a worker has come back (a hang
    /// watchdog of 600 s), then records how many each worker did.
    private func drainWorkers() {
        guard let work else { return }
        let completedBy = work.finish(timeoutSeconds: 600, what: "3D-SIM stacks", logger: logger)
        lock.lock()
        own.stacksByWorker = completedBy
        lock.unlock()
    }
}

extension AcquisitionProtocol {
    /// A channel's pattern set as 3D-SIM priors: per angle the nominal wave vector (order 1), the
    /// phases in frame order, m₁, m₂ (`order2_modulation`, else 0.5), kz from the laser's wavelength.
    public func sim3dPriors(channel c: Int) throws -> [SIM3DAngle] {
        let ch = channels[c]
        guard let name = ch.patternSet, let set = rig.modulator?.profile.modulator?.patternSet(named: name) else {
            throw MoireError(.config, "channel \(ch.name) has no pattern set for 3D-SIM priors", place: file)
        }
        let wavelength = rig.laser(named: ch.laser)?.profile.laser?.wavelengthNm ?? set.wavelengthNm
        return try (0..<angles).map { a in
            let specs = try (0..<phases).map { p -> PatternSpec in
                guard let s = set.pattern(angle: a, phase: p) else {
                    throw MoireError(
                        .config, "pattern set \(name) has no pattern for angle \(a), phase \(p)", place: rig.file)
                }
                return s
            }
            let k = hypot(specs[0].kx, specs[0].ky)
            return SIM3DAngle(
                kx: specs[0].kx, ky: specs[0].ky,
                kz: try SIM3DAngle.threeBeamKz(
                    kUm: k, excitationNm: wavelength, immersionIndex: rig.optics.immersionIndex),
                phases: specs.map(\.phaseRad), m1: specs[0].modulation, m2: specs[0].order2Modulation ?? 0.5)
        }
    }
}
