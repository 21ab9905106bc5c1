import MoireConfig
import MoireCore

/// How a camera starts an exposure.
public enum TriggerMode: String, Sendable, CaseIterable {
    /// Free-running at the camera's own rate.
    case `internal`
    /// One exposure per pulse on its trigger input (from the timing leader).
    case external
    /// One exposure per host command.
    case software
}

/// Camera settings for one acquisition.
public struct CameraSettings: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var binning: Int
    public var exposureMs: Double
    public var trigger: TriggerMode

    public init(width: Int, height: Int, binning: Int = 1, exposureMs: Double, trigger: TriggerMode) {
        self.width = width; self.height = height; self.binning = binning; self.exposureMs = exposureMs;
        self.trigger = trigger
    }
}

/// A frame as a camera delivers it: its sequential id (a gap is a lost frame), pixels and state.
/// It owns its pool slot until released: handed from the camera thread to one consumer, never shared.
public struct CapturedFrame: Sendable {
    /// Exposure counter from the start of acquisition, 0-based.
    public var frameID: Int
    public var slot: FrameSlot?
    /// Payload bytes actually delivered (a malformed transfer delivers fewer).
    public var byteCount: Int
    public var width: Int
    public var height: Int
    public var exposureStartNs: Int64
    public var state: DeviceState
    /// Whether `state` was observed with the exposure (simulated bench) or is unknown to the camera
    /// (a real camera: the runner records the planned state).
    public var stateObserved: Bool = true

    public init(
        frameID: Int, slot: FrameSlot?, byteCount: Int, width: Int, height: Int, exposureStartNs: Int64,
        state: DeviceState, stateObserved: Bool = true
    ) {
        self.frameID = frameID
        self.slot = slot
        self.byteCount = byteCount
        self.width = width
        self.height = height
        self.exposureStartNs = exposureStartNs
        self.state = state
        self.stateObserved = stateObserved
    }
}

/// A camera driver. One thread drives it; frames are pulled with a deadline.
public protocol Camera: AnyObject, Sendable {
    var name: String { get }
    var profile: CameraProfile { get }
    func configure(_ settings: CameraSettings) throws
    /// Starts acquiring into `pool`.
    func start(pool: FramePool) throws
    /// One trigger pulse (external line or software command, by the configured mode).
    func trigger() throws
    /// The next frame, or nil when `timeoutMs` passed. Throws when the camera is gone.
    func nextFrame(timeoutMs: Int) throws -> CapturedFrame?
    /// Exposures the camera has made since `start` (its own counter, as a register would report).
    var exposedCount: Int { get }
    func stop()
    var isAcquiring: Bool { get }
    /// Renders ahead what the camera will image under these patterns and emissions (a simulated
    /// camera's optics); a real camera does nothing (the default).
    func prepare(patterns: [PatternSpec?], emissionNm: [Double]) throws
}

/// Faults a simulated camera can be told to produce.
public enum CameraFault: Sendable, Equatable {
    /// Exposes frame `id` but never delivers it (a lost transfer).
    case dropFrame(Int)
    /// After `n` frames, stops exposing and delivering (ignores triggers).
    case stall(afterFrames: Int)
    /// After `n` frames, the camera is gone: `nextFrame` throws.
    case disconnect(afterFrames: Int)
    /// Delivers frame `id` truncated to half its bytes.
    case malformed(Int)
}

extension CameraFault {
    /// Parses `drop:N`, `stall:N`, `disconnect:N` or `malformed:N` (N: frame id, or frames before the fault).
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let n = Int(parts[1]), n >= 0 else {
            throw MoireError(.usage, "fault '\(text)' must look like drop:N, stall:N, disconnect:N or malformed:N")
        }
        switch parts[0] {
        case "drop": self = .dropFrame(n)
        case "stall": self = .stall(afterFrames: n)
        case "disconnect": self = .disconnect(afterFrames: n)
        case "malformed": self = .malformed(n)
        default: throw MoireError(.usage, "unknown fault '\(parts[0])'; expected drop, stall, disconnect or malformed")
        }
    }
}

/// A camera that can be told to misbehave (a simulated one, or the simulated sensor behind a
/// driver's byte-level peer): what `moire run --fault` and the fault tests reach.
public protocol FaultInjecting: AnyObject, Sendable {
    /// A fault to produce during the next acquisition.
    func inject(_ fault: CameraFault)
}

extension Camera {
    /// A real camera has nothing to render ahead.
    public func prepare(patterns: [PatternSpec?], emissionNm: [Double]) throws {}
}

/// One step of a hardware-sequenced run: which pattern, which laser line, how long.
public struct SequenceStep: Sendable, Equatable {
    public var pattern: Int
    public var laser: String?
    public var exposureMs: Double
    public var readoutMs: Double

    public init(pattern: Int, laser: String?, exposureMs: Double, readoutMs: Double) {
        self.pattern = pattern; self.laser = laser; self.exposureMs = exposureMs; self.readoutMs = readoutMs
    }
}

/// A spatial light modulator or DMD showing illumination patterns.
public protocol Modulator: AnyObject, Sendable {
    var name: String { get }
    var profile: ModulatorProfile { get }
    /// Shows one pattern (−1: uniform illumination, as for widefield).
    func show(pattern: Int) throws
    /// Uploads a sequence the modulator runs on its own when started.
    func upload(_ steps: [SequenceStep]) throws
    /// Runs the uploaded sequence once: per step, show, gate the laser, pulse the camera trigger.
    func startSequence(camera: Camera, lasers: [String: Laser]) throws
    /// Waits for the running sequence to end; false on timeout.
    func waitSequence(timeoutMs: Int) throws -> Bool
    /// Stops any sequence and shows nothing (safe).
    func idle()
    var isIdle: Bool { get }
}

/// A laser with a software enable, a power set-point and a TTL gate.
public protocol Laser: AnyObject, Sendable {
    var name: String { get }
    var profile: LaserProfile { get }
    func setPower(mW: Double) throws
    func setEnabled(_ on: Bool) throws
    /// TTL gate (when the laser is enabled, it emits while the gate is high). Software runs hold it high.
    func setGate(_ high: Bool)
    var isEmitting: Bool { get }
    var isEnabled: Bool { get }
    var powerMw: Double { get }
    /// Off, whatever state it was in. Never throws.
    func safe()
}

/// A z stage or piezo.
public protocol Stage: AnyObject, Sendable {
    var name: String { get }
    var profile: StageProfile { get }
    func move(toUm z: Double) throws
    var positionUm: Double { get }
    /// Moves to the home position. Never throws.
    func park()
}

/// A galvo scanner (TIRF angle, light-sheet scan).
public protocol Scanner: AnyObject, Sendable {
    var name: String { get }
    var profile: ScannerProfile { get }
    func set(volts: Double) throws
    var volts: Double { get }
    /// Moves to the park voltage. Never throws.
    func park()
    var isParked: Bool { get }
}

/// A positioner whose controller can step through a stored table of positions on its own, one
/// entry per pulse on its trigger input (the camera's exposure output: `wiring.scan_trigger`).
public protocol PositionTable: AnyObject, Sendable {
    /// Stores `positions` (the device's unit: µm for a stage, V for a galvo) and arms the table;
    /// pulse k moves to entry k mod count.
    func loadTable(_ positions: [Double]) throws
    /// Disarms the table (pulses move nothing). Never throws.
    func disarmTable()
}

/// A digital output wired to the camera's trigger input.
public protocol TriggerLine: AnyObject, Sendable {
    var name: String { get }
    /// One pulse (rising edge starts the exposure).
    func pulse() throws
    /// Low, whatever state it was in. Never throws.
    func safe()
}

/// The devices of a rig, built from its profiles.
/// Immutable references to devices, each guarding its own state.
public final class RigDevices: Sendable {
    public let rig: Rig
    public let camera: Camera
    public let modulator: Modulator?
    public let scanner: Scanner?
    public let stage: Stage?
    public let lasers: [String: Laser]
    /// The in-process peers of devices connected as `simulated-peer` (their logs are what tests
    /// compare; MoireSimulation's `simulatedPeers` gives them their type).
    public let peers: (any AnyObject & Sendable)?
    /// Where camera faults go: the simulated camera, or the simulated sensor behind the camera
    /// driver's peer; nil for a real camera.
    public let faultInjection: FaultInjecting?
    /// The line that triggers the camera in software-timed runs, when the rig wires one.
    public let cameraTrigger: TriggerLine?

    public init(
        rig: Rig, camera: Camera, modulator: Modulator?, scanner: Scanner?, stage: Stage?, lasers: [String: Laser],
        cameraTrigger: TriggerLine? = nil, faultInjection: FaultInjecting? = nil,
        peers: (any AnyObject & Sendable)? = nil
    ) {
        self.rig = rig
        self.camera = camera
        self.modulator = modulator
        self.scanner = scanner
        self.stage = stage
        self.lasers = lasers
        self.cameraTrigger = cameraTrigger
        self.faultInjection = faultInjection
        self.peers = peers
    }

    /// Lasers off, modulator idle, galvo parked, camera stopped, stage parked. Never throws.
    public func makeSafe() {
        for l in lasers.values { l.safe() }
        cameraTrigger?.safe()
        modulator?.idle()
        scanner?.park()
        camera.stop()
    }

    /// What the devices' safe state is now, device by device, for the log line every run ends with:
    /// (device kind and name, its state, whether that state is the safe one).
    public var safeStateReport: [(device: String, state: String, safe: Bool)] {
        var report: [(device: String, state: String, safe: Bool)] = []
        for (name, laser) in lasers.sorted(by: { $0.key < $1.key }) {
            let off = !laser.isEmitting && !laser.isEnabled
            report.append(("laser \(name)", off ? "off" : "EMITTING OR ENABLED", off))
        }
        if let modulator {
            report.append(("modulator \(modulator.name)", modulator.isIdle ? "idle" : "NOT IDLE", modulator.isIdle))
        }
        if let scanner {
            report.append(("galvo \(scanner.name)", scanner.isParked ? "parked" : "NOT PARKED", scanner.isParked))
        }
        report.append(
            ("camera \(camera.name)", camera.isAcquiring ? "STILL ACQUIRING" : "stopped", !camera.isAcquiring))
        return report
    }

    /// True when every device is in its safe state.
    public var isSafe: Bool {
        lasers.values.allSatisfy { !$0.isEmitting && !$0.isEnabled } && (modulator?.isIdle ?? true)
            && (scanner?.isParked ?? true) && !camera.isAcquiring
    }
}
