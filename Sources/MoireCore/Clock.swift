import Foundation
import Synchronization

/// Time for devices and runners: real, or virtual for tests (sleep advances instantly).
public protocol MoireClock: Sendable {
    /// Nanoseconds since the clock's origin.
    func nowNs() -> Int64
    /// Waits until `deadlineNs` on this clock.
    func sleep(untilNs deadlineNs: Int64)
}

extension MoireClock {
    /// Waits `ns` nanoseconds from now.
    public func sleep(ns: Int64) { sleep(untilNs: nowNs() + ns) }
}

/// Monotonic wall time.
public struct RealClock: MoireClock {
    private let origin: UInt64
    public init() { origin = DispatchTime.now().uptimeNanoseconds }
    public func nowNs() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds &- origin) }
    public func sleep(untilNs deadlineNs: Int64) {
        let remaining = deadlineNs - nowNs()
        if remaining > 0 { Thread.sleep(forTimeInterval: Double(remaining) / 1e9) }
    }
}

/// A test clock: time only moves when someone sleeps, and sleeping is instant.
///
/// Devices timed by it run as fast as the CPU allows while every timestamp stays exactly
/// what the timing model says.
public final class VirtualClock: MoireClock, @unchecked Sendable {
    private let now = Mutex<Int64>(0)
    public init() {}
    public func nowNs() -> Int64 { now.withLock { $0 } }
    public func sleep(untilNs deadlineNs: Int64) {
        now.withLock { if deadlineNs > $0 { $0 = deadlineNs } }
    }
    /// Moves time forward by `ns`.
    public func advance(ns: Int64) { now.withLock { $0 += ns } }
}

/// Wall-clock nanoseconds since the Unix epoch (for `publishedNs`).
public func unixTimeNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
