import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireHardware

/// The runner's explicit states.
public enum RunnerState: String, Sendable, Codable {
    case idle, arming, acquiring, paused, stopping, faulted
}

/// How a run ended.
public struct RunResult: Sendable, Equatable {
    /// `completed`, `stopped`, `aborted`, `fault`.
    public var reason: String
    public var error: MoireError?
    public var delivered: Int
    public var missing: Int
    public var malformed: Int
    /// Frames whose recorded device state differs from the plan.
    public var stateMismatches: Int
    public var planned: Int
    public var missingIndices: [Int]
    public var durationNs: Int64
    /// Frames the camera lost because every slot of the frame pool was in use (consumers too slow).
    public var poolExhausted: Int = 0
    /// Times the camera waited for a free slot (virtual time: backpressure instead of loss).
    public var poolWaits: Int = 0
}

/// Progress of a run, for progress bars and status replies.
public struct RunProgress: Sendable {
    public var done: Int
    public var planned: Int
    public var missing: Int
    public var elapsedNs: Int64
    public var state: RunnerState

    public init(done: Int, planned: Int, missing: Int, elapsedNs: Int64, state: RunnerState) {
        self.done = done; self.planned = planned; self.missing = missing; self.elapsedNs = elapsedNs; self.state = state
    }
}

/// Runs an event plan on a rig's devices: arms them, sequences exposures, collects frames
/// with deadlines, and leaves every device safe however the run ends.
public final class Runner: @unchecked Sendable {  // control state under `lock`
    public let proto: AcquisitionProtocol
    public let devices: RigDevices
    public let plan: EventPlan
    public let runID: String
    private let clock: MoireClock
    private let logger: Logger
    private let lock = NSLock()
    private var _state: RunnerState = .idle
    private var stopRequested = false
    private var abortRequested = false
    private var pauseRequested = false
    private var progress = RunProgress(done: 0, planned: 0, missing: 0, elapsedNs: 0, state: .idle)
    private var externalFault: MoireError?
    /// The controller stepping the scan through a stored table (`wiring.scan_trigger`), during a run.
    private var positionTable: PositionTable?

    /// Hardware-sequenced when the rig's leader is the modulator and the run uses patterns or it can sequence.
    public var hardwareSequenced: Bool { proto.rig.leader == .modulator && devices.modulator != nil }

    public init(
        protocol p: AcquisitionProtocol, devices: RigDevices, runID: String, clock: MoireClock = RealClock(),
        logger: Logger = Logger(label: "moire.runner")
    ) {
        proto = p; self.devices = devices; self.runID = runID; self.clock = clock; self.logger = logger
        plan = EventPlan(p)
        progress.planned = plan.events.count
    }

    public var state: RunnerState { lock.lock(); defer { lock.unlock() }; return _state }
    public var currentProgress: RunProgress { lock.lock(); defer { lock.unlock() }; return progress }

    private func set(_ s: RunnerState) {
        lock.lock(); _state = s; progress.state = s; lock.unlock()
        logger.debug("runner state", metadata: ["state": "\(s.rawValue)"])
    }

    /// Ends the run after the current exposure group.
    public func requestStop() { lock.lock(); stopRequested = true; pauseRequested = false; lock.unlock() }
    /// Says, device by device, the state every run ends in: lasers off, modulator idle, galvo
    /// parked, camera stopped; a device that did not reach it is a critical line of its own.
    private func logSafeState(reason: String) {
        let report = devices.safeStateReport
        var metadata: Logger.Metadata = ["reason": "\(reason)"]
        for entry in report { metadata[entry.device] = "\(entry.state)" }
        let unsafe = report.filter { !$0.safe }
        if unsafe.isEmpty {
            logger.notice("hardware safe", metadata: metadata)
        } else {
            logger.critical(
                "hardware NOT confirmed safe: \(unsafe.map { "\($0.device) \($0.state)" }.joined(separator: ", "))",
                metadata: metadata)
        }
    }

    /// Ends the run now: devices go safe at once.
    public func abort() {
        lock.lock(); abortRequested = true; stopRequested = true; pauseRequested = false; lock.unlock()
        devices.makeSafe()
    }
    /// Fault from outside (e.g. the recorder failed): stop and report it.
    public func fail(_ e: MoireError) { lock.lock(); externalFault = e; stopRequested = true; lock.unlock() }
    public func pause() { lock.lock(); pauseRequested = true; lock.unlock() }
    public func resume() { lock.lock(); pauseRequested = false; lock.unlock() }

    private var shouldStop: Bool { lock.lock(); defer { lock.unlock() }; return stopRequested }
    private var aborted: Bool { lock.lock(); defer { lock.unlock() }; return abortRequested }

    /// Runs the plan, handing every frame (or missing-frame record) in plan order to `sink`.
    /// The sink takes ownership of the frame's slot reference. The calling thread's waits run on
    /// the runner's clock (it participates in virtual time).
    public func run(pool: FramePool, sink: (Frame) throws -> Void, onProgress: (RunProgress) -> Void = { _ in })
        -> RunResult
    {
        clock.participate { execute(pool: pool, sink: sink, onProgress: onProgress) }
    }

    private func execute(pool: FramePool, sink: (Frame) throws -> Void, onProgress: (RunProgress) -> Void) -> RunResult
    {
        let start = clock.nowNs()
        let exhaustedBefore = pool.exhaustedCount
        let waitsBefore = pool.waitedCount
        var poolLossesAttributed = 0
        var delivered = 0
        var missing = 0
        var malformed = 0
        var mismatches = 0
        var missingIndices: [Int] = []
        var reason = "completed"
        var failure: MoireError?
        do {
            set(.arming)
            try arm(pool: pool)
            set(.acquiring)
            var firstFrame = true
            var configuredExposure = proto.channels[0].exposureMs
            let t0 = clock.nowNs()
            groups: for group in plan.groups {
                while true {
                    lock.lock(); let paused = pauseRequested && !stopRequested; lock.unlock()
                    if !paused { break }
                    if state != .paused { set(.paused) }
                    Thread.sleep(forTimeInterval: 0.01)  // paused: time stands still in virtual time
                }
                if state == .paused { set(.acquiring) }
                if shouldStop {
                    set(.stopping)
                    reason = aborted ? "aborted" : "stopped"
                    break
                }
                let first = group.first!
                // Time-lapse interval: the first group of each time point waits for its slot.
                if first.c == 0 && first.z == 0 && proto.intervalMs > 0 {
                    clock.sleep(untilNs: t0 + Int64(Double(first.t) * proto.intervalMs * 1e6))
                }
                if first.exposureMs != configuredExposure {
                    devices.camera.stop()
                    try devices.camera.configure(cameraSettings(exposureMs: first.exposureMs))
                    try devices.camera.start(pool: pool)
                    configuredExposure = first.exposureMs
                }
                if positionTable != nil {
                    // The controller steps the scan itself at the end of every exposure.
                } else if proto.hasZ, (proto.mode == .llsm || proto.mode == .llssim),
                    proto.rig.lightSheet?.scan == .galvo, let sc = devices.scanner
                {
                    // Galvo scan: the sheet and the detection focus move together; the sample stays.
                    let volts = first.zUm / sc.profile.umPerV
                    if sc.volts != volts { try sc.set(volts: volts) }
                } else if let stage = devices.stage, proto.hasZ, stage.positionUm != first.zUm {
                    try stage.move(toUm: first.zUm)
                }
                let base = devices.camera.exposedCount
                let laser = devices.lasers[first.laser]
                try laser?.setPower(mW: first.powerMw)
                if hardwareSequenced, let mod = devices.modulator {
                    laser?.setGate(false)
                    try laser?.setEnabled(true)
                    let readout = proto.rig.cameraProfile.readoutMs(rows: proto.roiHeight * proto.binning)
                    try mod.upload(
                        group.map {
                            SequenceStep(
                                pattern: $0.pattern, laser: $0.laser, exposureMs: $0.exposureMs, readoutMs: readout)
                        })
                    try mod.startSequence(camera: devices.camera, lasers: devices.lasers)
                }
                for (k, event) in group.enumerated() {
                    if aborted { reason = "aborted"; break groups }
                    if !hardwareSequenced {
                        try devices.modulator?.show(pattern: event.pattern)
                        laser?.setGate(true)
                        try laser?.setEnabled(true)
                        if let line = devices.cameraTrigger { try line.pulse() } else { try devices.camera.trigger() }
                    }
                    let deadline = Int(firstFrame ? proto.firstFrameDeadlineMs : proto.frameDeadlineMs)
                    var outcome = try collect(expectedID: base + k, deadlineMs: deadline)
                    if case .missing(.lost) = outcome, pool.exhaustedCount - exhaustedBefore > poolLossesAttributed {
                        poolLossesAttributed += 1
                        outcome = .missing(.poolExhausted)
                    }
                    if !hardwareSequenced { try laser?.setEnabled(false) }
                    firstFrame = false
                    var header = makeHeader(event)
                    switch outcome {
                    case .frame(let f):
                        header.exposureStartNs = f.exposureStartNs
                        header.state = f.stateObserved ? f.state : plannedState(event)
                        if f.stateObserved, !stateMatches(f.state, event) {
                            mismatches += 1
                            logger.warning(
                                "device state differs from the plan",
                                metadata: [
                                    "index": "\(event.index)", "planned.pattern": "\(event.pattern)",
                                    "state.pattern": "\(f.state.pattern)",
                                    "state.lasers": "\(f.state.lasers)",
                                ])
                        }
                        delivered += 1
                        try sink(Frame(header: header, slot: f.slot))
                    case .missing(let why):
                        header.missing = true
                        header.missingReason = why.reason
                        header.exposureStartNs = clock.nowNs() - start
                        if why == .malformed { malformed += 1 }
                        missing += 1
                        missingIndices.append(event.index)
                        logger.warning("frame missing", metadata: ["index": "\(event.index)", "why": "\(why)"])
                        try sink(Frame(header: header, slot: nil))
                    }
                    lock.lock()
                    progress.done = event.index + 1; progress.missing = missing;
                    progress.elapsedNs = clock.nowNs() - start
                    let snapshot = progress
                    lock.unlock()
                    onProgress(snapshot)
                    lock.lock(); let ext = externalFault; lock.unlock()
                    if let ext { throw ext }
                }
                if hardwareSequenced, let mod = devices.modulator {
                    guard try mod.waitSequence(timeoutMs: Int(proto.frameDeadlineMs)) else {
                        throw MoireError(
                            .deadline, "modulator sequence did not finish within \(Int(proto.frameDeadlineMs)) ms",
                            place: "modulator \(mod.name)")
                    }
                    try laser?.setEnabled(false)
                }
            }
        } catch let e as MoireError {
            failure = e
            reason = aborted ? "aborted" : "fault"
        } catch {
            failure = MoireError(.hardware, "\(error)")
            reason = "fault"
        }
        positionTable?.disarmTable()
        devices.makeSafe()
        logSafeState(reason: reason)
        let poolExhausted = pool.exhaustedCount - exhaustedBefore
        if poolExhausted > 0 {
            logger.warning(
                "frames lost: every frame-pool slot was in use (the consumers did not keep up)",
                metadata: [
                    "lost": "\(poolExhausted)", "slots": "\(pool.slotCount)",
                ])
        }
        set(failure != nil && reason == "fault" ? .faulted : .idle)
        if let failure {
            if reason == "aborted" {
                logger.notice("run stopped on request", metadata: ["why": "\(failure)"])
            } else {
                logger.error("run ended with a fault", metadata: ["error": "\(failure)"])
            }
        }
        return RunResult(
            reason: reason, error: failure, delivered: delivered, missing: missing, malformed: malformed,
            stateMismatches: mismatches, planned: plan.events.count, missingIndices: missingIndices,
            durationNs: clock.nowNs() - start, poolExhausted: poolExhausted,
            poolWaits: pool.waitedCount - waitsBefore)
    }

    private func cameraSettings(exposureMs: Double) -> CameraSettings {
        CameraSettings(
            width: proto.roiWidth, height: proto.roiHeight, binning: proto.binning, exposureMs: exposureMs,
            trigger: hardwareSequenced || devices.cameraTrigger != nil ? .external : .software)
    }

    private func arm(pool: FramePool) throws {
        devices.makeSafe()
        let cam = devices.camera
        try cam.configure(cameraSettings(exposureMs: proto.channels[0].exposureMs))
        // A simulated camera renders its optics for the run's patterns and emissions ahead.
        let sets = devices.modulator?.profile.patternSets ?? []
        let used = Set(plan.events.map(\.pattern))
        let specs = sets.flatMap(\.patterns).filter { used.contains($0.index) }
        let emissions = Set(
            proto.channels.compactMap { proto.rig.laser(named: $0.laser)?.profile.laser?.wavelengthNm }
        ).map { $0 + 37 }
        try cam.prepare(patterns: specs, emissionNm: emissions)
        for ch in proto.channels {
            guard devices.lasers[ch.laser] != nil else {
                throw MoireError(.hardware, "laser '\(ch.laser)' is not on this rig")
            }
        }
        // Hardware-sequenced: the modulator stays idle until the first sequence (a pattern shown now could
        // fire the camera's trigger input once it starts); software-timed: uniform until the first frame.
        if !hardwareSequenced { try devices.modulator?.show(pattern: -1) }
        // Hardware-timed scan (`wiring.scan_trigger`): the positions of one stack cycle stored in the
        // controller, entry k where frame k + 1 is exposed (pulse k is the end of frame k's exposure;
        // the last entry returns to the first plane for the next channel or time point). The first
        // plane is commanded; no plane after it is.
        positionTable = nil
        if proto.rig.scanTrigger, proto.hasZ {
            let galvo = (proto.mode == .llsm || proto.mode == .llssim) && proto.rig.lightSheet?.scan == .galvo
            let device = galvo ? devices.scanner as? PositionTable : devices.stage as? PositionTable
            let cycle = plan.events.filter { $0.t == 0 && $0.c == 0 }
            if let device, let first = cycle.first {
                let position = { (z: Double) in galvo ? z / self.devices.scanner!.profile.umPerV : z }
                if galvo {
                    try devices.scanner!.set(volts: position(first.zUm))
                } else {
                    try devices.stage!.move(toUm: first.zUm)
                }
                try device.loadTable(cycle.indices.map { position(cycle[($0 + 1) % cycle.count].zUm) })
                positionTable = device
                logger.info(
                    "scan positions stored in the controller, stepped by the camera's exposure output",
                    metadata: ["entries": "\(cycle.count)"])
            }
        }
        try cam.start(pool: pool)
    }

    private enum MissingWhy: String {
        case lost, malformed, poolExhausted

        var reason: MissingReason {
            switch self {
            case .lost: .lost
            case .malformed: .malformed
            case .poolExhausted: .poolExhausted
            }
        }
    }
    private enum Outcome { case frame(CapturedFrame), missing(MissingWhy) }

    /// Waits for frame `expectedID`: a later id or a lost transfer means it is missing; nothing
    /// exposed within the deadline means the camera stalled (a fault).
    private func collect(expectedID: Int, deadlineMs: Int) throws -> Outcome {
        while true {
            let next: CapturedFrame?
            if let early = pendingEarly {
                pendingEarly = nil; next = early
            } else {
                next = try devices.camera.nextFrame(timeoutMs: deadlineMs)
            }
            guard let f = next else {
                if aborted { throw MoireError(.aborted, "run aborted") }
                if devices.camera.exposedCount > expectedID { return .missing(.lost) }
                throw MoireError(
                    .deadline,
                    "no frame from the camera within \(deadlineMs) ms (frame \(expectedID)); the camera stalled",
                    place: "camera \(devices.camera.name)")
            }
            if f.frameID < expectedID { f.slot?.release(); continue }
            if f.frameID > expectedID {
                pendingEarly = f
                return .missing(.lost)
            }
            if f.byteCount != proto.roiWidth * proto.roiHeight * 2 || f.width != proto.roiWidth
                || f.height != proto.roiHeight
            {
                f.slot?.release()
                return .missing(.malformed)
            }
            return .frame(f)
        }
    }

    private var pendingEarly: CapturedFrame?

    private func makeHeader(_ e: AcquisitionEvent) -> FrameHeader {
        FrameHeader(
            stream: "raw", run: runID, seq: e.index, index: e.index, t: e.t, channel: e.channel, c: e.c, angle: e.angle,
            phase: e.phase, z: e.z, width: proto.roiWidth, height: proto.roiHeight, pixel: .uint16,
            pixelSizeUm: proto.pixelSizeUm)
    }

    private func plannedState(_ e: AcquisitionEvent) -> DeviceState {
        DeviceState(pattern: e.pattern, lasers: [e.laser], zUm: proto.hasZ ? e.zUm : 0, exposureMs: e.exposureMs)
    }

    private func stateMatches(_ s: DeviceState, _ e: AcquisitionEvent) -> Bool {
        s.pattern == e.pattern && s.lasers == [e.laser] && abs(s.exposureMs - e.exposureMs) < 1e-6
            && (!proto.hasZ || abs(s.zUm - e.zUm) < 1e-6)
    }
}
