import DequeModule
import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireStorage

/// A camera that serves a recording's planes in order, one per trigger, with the device state
/// that was recorded; missing planes are "exposed but not delivered", as they were live. A plain
/// TIFF stack (frames acquired elsewhere) is served page by page, its device state unknown (the
/// runner records the planned one).
public final class ReplayCamera: Camera, @unchecked Sendable {  // all mutable state under `cond`
    public let name: String
    public let profile: CameraProfile
    private let reader: any RecordingReader
    /// One plane to serve: where it is in the file, whether it was delivered live, and (from a
    /// Moiré recording; nil for a plain stack, whose frame is exposed when it is triggered) when it
    /// was exposed and the device state then.
    private struct Served {
        var plane: Int
        var missing: Bool
        var recorded: (exposureStartNs: Int64, state: DeviceState)?
    }
    private let records: [Served]
    private let clock: MoireClock
    /// Guards the state below; its waits run on the replay's clock.
    private let cond: ClockCondition
    private var pool: FramePool?
    private var next = 0
    private var exposed = 0
    private var ready: Deque<CapturedFrame> = []
    private var acquiring = false
    private var settings = CameraSettings(width: 1, height: 1, exposureMs: 1, trigger: .software)

    public init(path: String, profile: CameraProfile, clock: MoireClock = RealClock()) throws {
        reader = try RecordingFormat.openReader(path: path)
        if let recorded = reader.planeRecords() {
            records = recorded.filter(\.acquired).map {
                Served(
                    plane: $0.header.index, missing: $0.header.missing,
                    recorded: ($0.header.exposureStartNs, $0.header.state))
            }
        } else {
            guard reader.pixel == .uint16 else {
                throw MoireError(
                    .format, "a plain stack replays as camera frames, which are uint16; this one holds \(reader.pixel)",
                    place: path)
            }
            records = (0..<reader.planeCount).map { Served(plane: $0, missing: false, recorded: nil) }
        }
        name = "replay"
        self.profile = profile
        self.clock = clock
        cond = clock.makeCondition()
    }

    public var planeCount: Int { records.count }

    public func configure(_ s: CameraSettings) throws {
        guard s.width == reader.width, s.height == reader.height else {
            throw MoireError(
                .hardware,
                "the protocol asks for \(s.width)×\(s.height); the recording is \(reader.width)×\(reader.height)",
                place: reader.path)
        }
        settings = s
    }

    public func start(pool: FramePool) throws {
        cond.lock(); self.pool = pool; acquiring = true; cond.unlock()
    }

    public func trigger() throws {
        cond.lock(); defer { cond.unlock() }
        guard acquiring else { return }
        guard next < records.count else { return }
        let rec = records[next]
        let id = exposed
        next += 1; exposed += 1
        if rec.missing { return }
        // Backpressure as the simulated camera: virtual time waits for a free slot, real time drops.
        guard let slot = pool?.acquire(for: clock.backpressure) else { return }
        try slot.withBytes { try reader.readPlane(rec.plane, into: $0) }
        ready.append(
            CapturedFrame(
                frameID: id, slot: slot, byteCount: reader.width * reader.height * 2, width: reader.width,
                height: reader.height, exposureStartNs: rec.recorded?.exposureStartNs ?? clock.nowNs(),
                state: rec.recorded?.state ?? DeviceState(), stateObserved: rec.recorded != nil))
        cond.broadcast()
    }

    public func nextFrame(timeoutMs: Int) throws -> CapturedFrame? {
        let deadline = clock.deadline(afterMs: Double(timeoutMs))
        cond.lock(); defer { cond.unlock() }
        while ready.isEmpty { if !cond.wait(untilNs: deadline) { return nil } }
        return ready.removeFirst()
    }

    public var exposedCount: Int { cond.lock(); defer { cond.unlock() }; return exposed }

    public func stop() {
        cond.lock(); acquiring = false; let l = ready; ready = []; cond.unlock()
        for f in l { f.slot?.release() }
    }

    public var isAcquiring: Bool { cond.lock(); defer { cond.unlock() }; return acquiring }
}
