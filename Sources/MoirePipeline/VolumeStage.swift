import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireFFT
import MoireReconstruction
import MoireStorage
import MoireTransport

/// Counters of the live light-sheet stage.
public struct VolumeStageCounters: Sendable, Equatable {
    public var stacksComplete = 0
    public var volumes = 0
    /// Stacks dropped because the worker was still busy with an earlier one.
    public var skippedBehind = 0
    /// Planes that did not come: filled with the stack's background, flagged in the volume's header.
    public var missingPlanes = 0
    /// With `reconstruction.workers`: stacks done by each worker (`local`: in process, when none
    /// was connected), and stacks that came back unusable.
    public var stacksByWorker: [String: Int] = [:]
    public var workerFailures = 0
}

/// The live light-sheet stage (mode llsm): assembles each time point's planes of a channel into a
/// stack by their header indices (a missing plane is filled with the stack's background, flagged
/// and counted, never shifted), with `source: denoised` denoises its planes with the live denoiser's
/// current weights, deskews it, deconvolves it (Richardson–Lucy; the rig's measured PSF, or the Gaussian
/// model of its optics and sheet), with `rotate` turns it into the coverslip frame, and publishes `vol.<channel>`
/// (the volume, float32, z slowest, `depth` in the header) and `mip.<channel>` (its maximum intensity
/// projection along z); volumes are recorded to `NAME.vol.ome.tif` beside the raw recording. The
/// receiving thread only copies planes.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
final class VolumeStage: BackpressuredStage, @unchecked Sendable {
    let name = "volume"
    /// This stage's latency metric (made once; the backend, when there is one, exists by now).
    private let latency = PipelineMetrics.latency(stage: "volume")
    private let volumesMade = PipelineMetrics.volumes(stage: "volume")
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
    private let geometry: LightSheetGeometry
    private let iterations: Int
    /// LLS-SIM: the stage stacks the SIM stage's SR planes (2× grid) instead of raw planes.
    private let fromSR: Bool
    private let planeWidth: Int, planeHeight: Int
    private let background: Float?
    /// Volumes turned into the coverslip frame (`CoverslipRotation`) before they are published and recorded.
    private let rotate: Bool
    /// Measured PSFs by channel (the rig's `light_sheet.psf`); the others use the model.
    private let measuredPSF: [Int: Volume]
    /// With `light_sheet.source: denoised`: the live denoiser whose current weights denoise every
    /// plane of a stack before it is deskewed (set by the pipeline).
    var denoiser: DenoiseStage?
    private let lock = NSLock()
    private let stacks: StackQueue
    /// In virtual time a complete stack waits for the worker instead of replacing one (StackQueue).
    var backpressure: Backpressure {
        get { stacks.backpressure }
        set {
            stacks.backpressure = newValue
            volumeOutput.backpressure = newValue
        }
    }
    private var own = VolumeStageCounters()
    var counters: VolumeStageCounters {
        lock.lock(); defer { lock.unlock() }
        var c = own
        (c.stacksComplete, c.skippedBehind) = stacks.counts
        return c
    }
    /// One processor per channel (the PSF depends on the emission).
    private var processors: [Int: LightSheetProcessor] = [:]
    private let volumeOutput: VolumeOutput
    var recordPath: String? { volumeOutput.recordPath }
    /// A stack handed to a worker, kept until its volume comes back.
    private struct SentStack {
        var first: FrameHeader
        var inputs: [Int]
        var missing: [Int]
        var weightsVersion: Int?
        var scale: Float?
        var publishedNs: Int64
    }
    /// With `reconstruction.workers` (mode llsm): the stacks are deskewed and deconvolved by
    /// `moire worker` processes, at most 4 out at once (nil: here).
    private let work: OrderedWork<SentStack>?

    /// `measuredPSF`: by channel, from `measuredPSFs(for:)` (made before the devices are opened).
    init(
        protocol p: AcquisitionProtocol, recordingPath: String?, logger: Logger, fromSR: Bool = false,
        measuredPSF: [Int: Volume] = [:]
    ) throws {
        guard let ls = p.rig.lightSheet else {
            throw MoireError(.config, "mode llsm needs a rig with a light sheet", place: p.rig.file)
        }
        proto = p; self.logger = logger; self.fromSR = fromSR
        let scale = fromSR ? 2 : 1
        planeWidth = p.roiWidth * scale; planeHeight = p.roiHeight * scale
        geometry = try LightSheetGeometry(
            angleDeg: ls.angleDeg, stepUm: p.zStepUm, pixelUm: p.pixelSizeUm / Double(scale))
        // SR planes are already sharpened by the reconstruction: no deconvolution of LLS-SIM volumes.
        iterations = fromSR ? 0 : p.lightSheet.iterations
        background = p.lightSheet.backgroundADU
        rotate = p.lightSheet.rotate
        self.measuredPSF = iterations > 0 ? measuredPSF : [:]
        bus = try RawBus()
        stacks = StackQueue(stream: fromSR ? "sr" : "raw", slots: p.zPlanes, width: planeWidth, height: planeHeight) {
            $0.z
        }
        var w = geometry.deskewedWidth(nx: planeWidth, nz: p.zPlanes)
        var d = p.zPlanes
        if rotate {
            let g = CoverslipRotation.grid(
                width: w, depth: d, voxelUm: (geometry.pixelUm, geometry.pixelUm, geometry.planeSpacingUm),
                angleDeg: geometry.angleDeg)
            w = g.width; d = g.depth
        }
        let path =
            p.lightSheet.recordVolumes
            ? recordingPath.map { RecordingFormat.derivedPath(of: $0, stream: "vol") } : nil
        volumeOutput = VolumeOutput(
            bus: bus, volumeBytes: w * planeHeight * d * 4, projectionBytes: w * planeHeight * 4, recordPath: path)
        // LLS-SIM's SIM stage has the workers (its sets); its volumes are only deskewed, here.
        work =
            fromSR
            ? nil : try WorkBroker.forReconstruction(p.reconstruction).map { OrderedWork(broker: $0, limit: 4) }
    }

    deinit { work?.broker.stop() }

    /// The rig's measured PSFs (`light_sheet.psf`) by channel, loaded and checked against the volumes
    /// `p` makes: a run does not start with a PSF it cannot use. Channels without one use the model.
    static func measuredPSFs(for p: AcquisitionProtocol) throws -> [Int: Volume] {
        guard p.mode == .llsm, let ls = p.rig.lightSheet, p.lightSheet.iterations > 0
        else { return [:] }
        let geometry = try LightSheetGeometry(angleDeg: ls.angleDeg, stepUm: p.zStepUm, pixelUm: p.pixelSizeUm)
        let w = geometry.deskewedWidth(nx: p.roiWidth, nz: p.zPlanes)
        var out: [Int: Volume] = [:]
        for (c, ch) in p.channels.enumerated() {
            guard let file = ls.psf(emissionNm: ch.emissionNm) else {
                if !ls.psfByEmissionNm.isEmpty {
                    throw MoireError(
                        .config,
                        "light_sheet.psf has no PSF for channel \(ch.name)'s emission (\(ch.emissionNm) nm) and no common one",
                        place: p.rig.file)
                }
                continue
            }
            do {
                let img = try ImageImport.load(file)
                if let px = img.pixelSizeUm, abs(px - geometry.pixelUm) > 0.01 * geometry.pixelUm {
                    throw MoireError(
                        .config, "the PSF is sampled at \(px) µm; the deskewed volumes at \(geometry.pixelUm) µm")
                }
                let psf = try Volume(
                    planes: img.planes, width: img.width, height: img.height,
                    voxelUm: (geometry.pixelUm, geometry.pixelUm, geometry.planeSpacingUm))
                try RichardsonLucy.check(psf: psf, width: w, height: p.roiHeight, depth: p.zPlanes)
                out[c] = psf
            } catch let e as MoireError {
                throw MoireError(.config, "light_sheet.psf for channel \(ch.name): \(e.message)", place: file)
            }
        }
        return out
    }

    /// The processor of `channel`, made on first use (its deconvolver is planned by `prepare`).
    private func processor(channel: Int) throws -> LightSheetProcessor {
        lock.lock()
        defer { lock.unlock() }
        if let made = processors[channel] { return made }
        let optics = try proto.lightSheetOptics(emissionNm: proto.channels[channel].emissionNm)
        let measured = measuredPSF[channel]
        let made = LightSheetProcessor(
            geometry: geometry, iterations: iterations, background: background, rigor: .fromWisdom
        ) {
            measured ?? LightSheetPSF.model(optics, voxelUm: $0)
        }
        processors[channel] = made
        return made
    }

    /// Plans every channel's deconvolution on a thread of its own while the devices arm, so the
    /// first volume does not wait for it (plans from the wisdom `moire wisdom` made, else estimated).
    func prepare() {
        guard iterations > 0, work == nil else { return }
        let thread = Thread { [self] in
            let started = DispatchTime.now().uptimeNanoseconds
            for channel in proto.channels.indices {
                do {
                    try processor(channel: channel).prepare(
                        width: planeWidth, height: planeHeight, depth: proto.zPlanes)
                } catch {
                    // The first stack makes it again and reports the error where it counts.
                    logger.warning(
                        "deconvolution could not be prepared ahead",
                        metadata: ["channel": "\(channel)", "error": "\(error)"])
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            logger.info(
                "deconvolution prepared while the devices armed",
                metadata: ["seconds": "\(String(format: "%.2f", seconds))"])
        }
        thread.name = "moire.stage.volume.prepare"
        thread.start()
    }

    func start() {
        prepare()
        work?.start(name: "moire.stage.volume.collect", expectedWorkers: proto.reconstruction.workers?.expectedCount) {
            [self] result, stack in collect(result, stack)
        }
        stacks.start(
            name: "moire.stage.volume", logger: logger, output: volumeOutput, process: { [self] in try process($0) },
            drain: { [self] in drainWorkers() }
        ) { [self] in
            let c = counters
            return (c.volumes, c.skippedBehind)
        }
    }

    func join(timeoutSeconds: Double) -> Bool { stacks.join(timeoutSeconds: timeoutSeconds) }

    /// Receiver: copies each plane into its stack by the header's t, c and z.
    func receive(_ item: BusItem, fromInput input: Int) -> Bool { stacks.handle(item) }

    var report: StageReport {
        let c = counters
        return StageReport(
            counters: [
                StageCounter(name: "stacks", value: c.stacksComplete),
                StageCounter(name: "volumes", value: c.volumes),
                StageCounter(name: "skipped.behind", value: c.skippedBehind),
                StageCounter(name: "missing.planes", value: c.missingPlanes),
                StageCounter(name: "worker.failures", value: c.workerFailures),
                StageCounter(name: "unpublished", value: volumeOutput.dropped),
            ], details: c)
    }

    /// The layout of the volume recording, from the first volume's header.
    func volumeLayout(_ first: FrameHeader) -> RecordingLayout {
        proto.derivedLayout(first: first, name: "volumes of \(proto.name)", mode: "llsm-volume")
    }

    private func process(_ stack: StackQueue.Stack) throws {
        guard let h0 = stack.first else { return }
        let missing = stack.missing
        guard missing.count < proto.zPlanes else { return }
        if !missing.isEmpty {
            lock.lock(); own.missingPlanes += missing.count; lock.unlock()
            logger.warning(
                "stack with missing planes: filled with its background and flagged",
                metadata: ["t": "\(h0.t)", "planes": "\(missing)"])
        }
        var planes = stack.planes
        var weightsVersion: Int?
        var scale: Float?
        if let denoiser {
            (planes, weightsVersion, scale) = try denoiser.denoise(
                planes: planes, width: planeWidth, height: planeHeight, skip: Set(missing))
        }
        let inputs = stack.headers.compactMap { $0?.seq }
        let publishedNs = stack.headers.compactMap { $0?.publishedNs }.max() ?? 0
        if let work {
            let measured = measuredPSF[h0.c]
            var job = LightSheetJob(
                width: planeWidth, height: planeHeight, depth: proto.zPlanes, angleDeg: geometry.angleDeg,
                stepUm: geometry.stepUm, pixelUm: geometry.pixelUm, iterations: iterations, background: background,
                rotate: rotate, missing: missing.sorted(),
                optics: measured == nil ? try proto.lightSheetOptics(emissionNm: proto.channels[h0.c].emissionNm) : nil)
            if let measured {
                job.measuredShape = [measured.width, measured.height, measured.depth]
                job.measuredVoxelUm = [measured.voxelUm.x, measured.voxelUm.y, measured.voxelUm.z]
            }
            work.submit(
                parts: try job.item(planes: planes, measuredPSF: measured).parts,
                keeping: SentStack(
                    first: h0, inputs: inputs, missing: missing.sorted(), weightsVersion: weightsVersion, scale: scale,
                    publishedNs: publishedNs))
            return
        }
        let processor = try self.processor(channel: h0.c)
        var vol = try processor.process(planes: planes, width: planeWidth, height: planeHeight, missing: Set(missing))
            .volume
        if rotate { vol = CoverslipRotation.apply(vol, angleDeg: geometry.angleDeg) }
        try emit(
            vol, first: h0, inputs: inputs, missing: missing.sorted(), weightsVersion: weightsVersion, scale: scale,
            publishedNs: publishedNs)
    }

    /// Publishes (and records) one volume and counts it.
    private func emit(
        _ vol: Volume, first h0: FrameHeader, inputs: [Int], missing: [Int], weightsVersion: Int?, scale: Float?,
        publishedNs: Int64
    ) throws {
        var vh = FrameHeader(
            stream: "vol", run: h0.run, seq: 0, index: 0, t: h0.t, channel: h0.channel, c: h0.c, angle: 0, phase: 0,
            z: 0, width: vol.width, height: vol.height, pixel: .float32, pixelSizeUm: vol.voxelUm.x,
            exposureStartNs: h0.exposureStartNs, state: h0.state)
        vh.inputs = inputs
        vh.params = [
            "voxelZUm": String(vol.voxelUm.z), "source": fromSR ? "sim-sr" : "raw",
            "sheetAngleDeg": String(geometry.angleDeg), "stepUm": String(geometry.stepUm),
            "iterations": String(iterations), "missingPlanes": missing.map(String.init).joined(separator: ","),
            "frame": rotate ? "coverslip" : "detection", "psf": measuredPSF[h0.c] != nil ? "measured" : "model",
        ]
        if let weightsVersion {
            vh.params?["source"] = "denoised"; vh.params?["weightsVersion"] = String(weightsVersion)
            if let scale { vh.params?["denoiseScale"] = String(scale) }
        }
        try volumeOutput.emit(vol, header: vh)
        lock.lock(); own.volumes += 1; lock.unlock()
        volumesMade.increment()
        PipelineMetrics.record(latency, sincePublishedNs: publishedNs)
    }

    /// A volume back from a worker (in stack order): published, or counted as a failure.
    private func collect(_ result: WorkItem, _ stack: SentStack) {
        do {
            let vol = try LightSheetJob.volume(of: result)
            try emit(
                vol, first: stack.first, inputs: stack.inputs, missing: stack.missing,
                weightsVersion: stack.weightsVersion, scale: stack.scale, publishedNs: stack.publishedNs)
        } catch {
            lock.lock()
            own.workerFailures += 1
            lock.unlock()
            logger.error(
                "a light-sheet stack came back from its worker unusable; skipped",
                metadata: ["stack": "\(result.sequence)", "error": "\(error)"])
        }
    }

    /// After the last stack: waits until every stack out at a worker has come back (a hang
    /// watchdog of 600 s), then records how many each worker did.
    private func drainWorkers() {
        guard let work else { return }
        let completedBy = work.finish(timeoutSeconds: 600, what: "light-sheet stacks", logger: logger)
        lock.lock()
        own.stacksByWorker = completedBy
        lock.unlock()
    }
}

extension AcquisitionProtocol {
    /// The light-sheet optics of this protocol's rig for one emission wavelength (the PSF model's inputs).
    func lightSheetOptics(emissionNm: Double) throws -> LightSheetOptics {
        guard let ls = rig.lightSheet else { throw MoireError(.config, "the rig has no light sheet", place: rig.file) }
        return try LightSheetOptics(
            na: rig.optics.objectiveNA, immersionIndex: rig.optics.immersionIndex, emissionNm: emissionNm,
            sheetThicknessUm: ls.thicknessUm)
    }
}
