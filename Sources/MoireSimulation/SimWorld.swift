import Foundation
import MoireConfig
import MoireCore
import MoireHardware

/// The shared optical bench of the simulated devices: what the lasers, modulator and stage are
/// doing right now, read by the camera at the start of each exposure.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SimWorld: @unchecked Sendable {
    public struct Snapshot: Sendable {
        public var pattern: Int
        public var spec: PatternSpec?
        /// Emitting lasers: name, power (mW), wavelength (nm).
        public var lasers: [(name: String, powerMw: Double, wavelengthNm: Double)]
        public var zUm: Double
        /// The galvo's scan position (volts × µm per volt), when there is a scanner.
        public var scannerUm: Double = 0
        /// The stage's home: where a 3D specimen's middle sits (widefield/SIM on a 3D specimen).
        public var stageHomeUm: Double = 0
    }

    private let lock = NSLock()
    private var lasers: [String: SimulatedLaser] = [:]
    private weak var modulator: SimulatedModulator?
    private weak var stage: SimulatedStage?
    private weak var scanner: SimulatedScanner?
    /// Every device command, in order, for tests that check sequencing.
    private var log: [String] = []
    public var logEnabled = false

    public init() {}

    func register(_ l: SimulatedLaser) { lock.lock(); lasers[l.name] = l; lock.unlock() }
    func register(_ m: SimulatedModulator) { lock.lock(); modulator = m; lock.unlock() }
    func register(_ s: SimulatedStage) { lock.lock(); stage = s; lock.unlock() }
    func register(_ s: SimulatedScanner) { lock.lock(); scanner = s; lock.unlock() }

    public func snapshot() -> Snapshot {
        lock.lock()
        let ls = lasers.values.sorted { $0.name < $1.name }
        let m = modulator
        let s = stage
        let sc = scanner
        lock.unlock()
        let (p, spec) = m?.current ?? (-1, nil)
        let emitting = ls.filter(\.isEmitting).map {
            (name: $0.name, powerMw: $0.powerMw, wavelengthNm: $0.profile.wavelengthNm)
        }
        return Snapshot(
            pattern: p, spec: spec, lasers: emitting, zUm: s?.positionUm ?? 0,
            scannerUm: sc.map { $0.volts * $0.profile.umPerV } ?? 0, stageHomeUm: s?.profile.homeUm ?? 0)
    }

    func record(_ line: String) {
        guard logEnabled else { return }
        lock.lock(); log.append(line); lock.unlock()
    }

    /// The device command log (when `logEnabled`).
    public var commandLog: [String] { lock.lock(); defer { lock.unlock() }; return log }
}
