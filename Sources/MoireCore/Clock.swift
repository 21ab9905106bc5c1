import Foundation
import Synchronization

/// What a device does when a frame has nowhere to go (its frame pool is exhausted).
public enum Backpressure: Sendable, Equatable {
    /// Real hardware cannot wait: the frame is dropped and counted.
    case drop
    /// Simulated hardware in virtual time waits for a free slot; time does not move meanwhile.
    case block
}

/// Time for devices and runners: real, or virtual for tests.
///
/// The clock contract: every wait of a device or runner goes through its clock — `sleep`, or
/// a timed `wait` on a `ClockCondition` the clock made — and every thread that does such waits
/// is started with `startThread` or runs inside `participate`. Wall-clock timeouts remain only
/// as hang watchdogs (`hangWatchdogSeconds`).
public protocol MoireClock: Sendable {
    /// Nanoseconds since the clock's origin.
    func nowNs() -> Int64
    /// Waits until `deadlineNs` on this clock.
    func sleep(untilNs deadlineNs: Int64)
    /// A lock with a condition whose timed waits run on this clock.
    func makeCondition() -> ClockCondition
    /// Starts a thread whose waits this clock accounts for (a simulated device's worker).
    func startThread(name: String, _ body: @escaping @Sendable () -> Void)
    /// Runs `body` on the calling thread, counted among the threads whose waits this clock accounts for.
    func participate<Result>(_ body: () throws -> Result) rethrows -> Result
    /// What devices timed by this clock do when their frame pool is exhausted.
    var backpressure: Backpressure { get }
}

extension MoireClock {
    /// Waits `ns` nanoseconds from now.
    public func sleep(ns: Int64) { sleep(untilNs: nowNs() + ns) }

    /// The deadline `milliseconds` from now on this clock.
    public func deadline(afterMs milliseconds: Double) -> Int64 { nowNs() + Int64(milliseconds * 1e6) }
}

/// A lock and a condition whose timed waits run on a `MoireClock`.
public protocol ClockCondition: AnyObject, Sendable {
    func lock()
    func unlock()
    /// Waits (the lock held) until `broadcast` or until the clock reaches `deadlineNs` (nil: no
    /// deadline). Returns false when the deadline passed; may return true spuriously.
    func wait(untilNs deadlineNs: Int64?) -> Bool
    /// Wakes every waiter.
    func broadcast()
}

extension ClockCondition {
    /// Runs `body` with the lock held.
    public func withLock<Result>(_ body: () throws -> Result) rethrows -> Result {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// The wall-clock watchdog behind every clock-timed wait: a wait that lasts this long in wall
/// time is a hang, whatever the clock says.
public let hangWatchdogSeconds: Double = 120

extension NSCondition {
    /// Waits, the condition locked by the caller, while `blocked()` holds, for at most the hang
    /// watchdog; false when it still holds then. For a stage that waits for its worker under
    /// blocking backpressure.
    public func waitUnderHangWatchdog(while blocked: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(hangWatchdogSeconds)
        while blocked() {
            if !wait(until: deadline) { return !blocked() }
        }
        return true
    }
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

    public func makeCondition() -> ClockCondition { WallCondition(clock: self) }

    public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = name
        thread.start()
    }

    public func participate<Result>(_ body: () throws -> Result) rethrows -> Result { try body() }

    public var backpressure: Backpressure { .drop }
}

/// An `NSCondition` timed by a `RealClock`.
// immutable: a thread-safe NSCondition and a clock value
final class WallCondition: ClockCondition, @unchecked Sendable {
    // NSCondition is thread-safe; the clock is an immutable value.
    private let condition = NSCondition()
    private let clock: RealClock

    init(clock: RealClock) { self.clock = clock }

    func lock() { condition.lock() }
    func unlock() { condition.unlock() }
    func broadcast() { condition.broadcast() }

    func wait(untilNs deadlineNs: Int64?) -> Bool {
        guard let deadlineNs else {
            condition.wait()
            return true
        }
        // NSCondition times out on the calendar clock, which can run ahead of the monotonic clock this
        // condition answers to (measured under load: a 5 ms wait back after 4.6 ms): wait again
        // until this clock's deadline has passed.
        while true {
            let remaining = deadlineNs - clock.nowNs()
            if remaining <= 0 { return false }
            if condition.wait(until: Date(timeIntervalSinceNow: Double(remaining) / 1e9)) { return true }
        }
    }
}

/// A test clock: a discrete-event scheduler.
///
/// Time moves only when every participating thread (those started by `startThread` or inside
/// `participate`) is blocked in a clock wait; it then jumps to the earliest deadline and wakes
/// the waiters due. A thread that computes, renders or waits on anything else (a full frame
/// pool, a bus) holds time still, so simulated devices run as fast as the machine allows and a
/// loaded machine changes nothing that the timing model says. A thread that does not
/// participate and sleeps moves time forward at once.
public final class VirtualClock: MoireClock, @unchecked Sendable {  // all mutable state under `scheduler`
    // Every mutable field below is guarded by `scheduler`.
    private let scheduler = NSCondition()
    private var now: Int64 = 0
    /// Participating threads not blocked in a clock wait.
    private var running = 0
    private var waiters: [Int: Waiter] = [:]
    private var nextTicket = 0
    private let participantKey: String
    public let backpressure: Backpressure

    private struct Waiter {
        var deadline: Int64?
        var condition: ObjectIdentifier?
        var participant: Bool
        var woken = false
        var timedOut = false
    }

    /// A clock at time 0 whose simulated devices wait for a free frame slot.
    public convenience init() { self.init(backpressure: .block) }

    /// `backpressure`: `.block` makes simulated devices wait for a free frame slot; `.drop` has
    /// them behave as real hardware does, for tests of that path.
    public init(backpressure: Backpressure) {
        participantKey = "moire.virtual-clock.\(UUID().uuidString)"
        self.backpressure = backpressure
    }

    public func nowNs() -> Int64 {
        scheduler.lock()
        defer { scheduler.unlock() }
        return now
    }

    /// Moves time forward by `ns` (waiters due by then wake).
    public func advance(ns: Int64) {
        scheduler.lock()
        defer { scheduler.unlock() }
        jumpLocked(to: now + ns)
    }

    public func sleep(untilNs deadlineNs: Int64) {
        guard isParticipant else {
            scheduler.lock()
            jumpLocked(to: deadlineNs)
            scheduler.unlock()
            return
        }
        _ = block(deadline: deadlineNs, condition: nil, release: {})
    }

    public func makeCondition() -> ClockCondition { VirtualCondition(clock: self) }

    public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
        // Counted before it exists, so time cannot move before the thread has run.
        scheduler.lock()
        running += 1
        scheduler.unlock()
        let thread = Thread { [self] in
            Thread.current.threadDictionary[participantKey] = true
            body()
            Thread.current.threadDictionary.removeObject(forKey: participantKey)
            leave()
        }
        thread.name = name
        thread.start()
    }

    public func participate<Result>(_ body: () throws -> Result) rethrows -> Result {
        if isParticipant { return try body() }
        scheduler.lock()
        running += 1
        scheduler.unlock()
        Thread.current.threadDictionary[participantKey] = true
        defer {
            Thread.current.threadDictionary.removeObject(forKey: participantKey)
            leave()
        }
        return try body()
    }

    private var isParticipant: Bool { Thread.current.threadDictionary[participantKey] != nil }

    private func leave() {
        scheduler.lock()
        running -= 1
        advanceIfIdleLocked()
        scheduler.unlock()
    }

    /// Blocks the calling thread until woken for `condition` or until `deadline`.
    /// `release` (the caller's own lock) is released once the waiter is registered, so no wake-up is lost.
    /// Returns false when the deadline passed (or the hang watchdog fired).
    fileprivate func block(deadline: Int64?, condition: ObjectIdentifier?, release: () -> Void) -> Bool {
        scheduler.lock()
        if let deadline, deadline <= now {
            scheduler.unlock()
            return false
        }
        let participant = isParticipant
        let ticket = nextTicket
        nextTicket += 1
        waiters[ticket] = Waiter(deadline: deadline, condition: condition, participant: participant)
        if participant { running -= 1 }
        advanceIfIdleLocked()
        release()
        let watchdog = Date(timeIntervalSinceNow: hangWatchdogSeconds)
        while waiters[ticket]?.woken == false {
            if !scheduler.wait(until: watchdog), waiters[ticket]?.woken == false {
                // A hang: the wait ends as timed out, and this thread runs again.
                waiters[ticket]?.woken = true
                waiters[ticket]?.timedOut = true
                if participant { running += 1 }
            }
        }
        let waiter = waiters.removeValue(forKey: ticket)
        scheduler.unlock()
        return !(waiter?.timedOut ?? false)
    }

    /// Wakes the waiters of `condition`.
    fileprivate func wake(condition: ObjectIdentifier) {
        scheduler.lock()
        defer { scheduler.unlock() }
        var any = false
        for (ticket, waiter) in waiters where waiter.condition == condition && !waiter.woken {
            waiters[ticket]?.woken = true
            if waiter.participant { running += 1 }
            any = true
        }
        if any { scheduler.broadcast() }
    }

    /// With every participant blocked, jumps to the earliest deadline (scheduler locked).
    private func advanceIfIdleLocked() {
        guard running == 0 else { return }
        let pending = waiters.values.filter { !$0.woken }
        guard let earliest = pending.compactMap(\.deadline).min() else { return }
        jumpLocked(to: earliest)
    }

    /// Sets time to at least `deadline` and wakes every waiter due (scheduler locked).
    private func jumpLocked(to deadline: Int64) {
        if deadline > now { now = deadline }
        var any = false
        for (ticket, waiter) in waiters where !waiter.woken {
            guard let due = waiter.deadline, due <= now else { continue }
            waiters[ticket]?.woken = true
            waiters[ticket]?.timedOut = true
            if waiter.participant { running += 1 }
            any = true
        }
        if any { scheduler.broadcast() }
    }
}

/// A lock and condition timed by a `VirtualClock`.
final class VirtualCondition: ClockCondition, @unchecked Sendable {  // immutable: an NSLock and the clock
    // NSLock is thread-safe; the clock does its own locking.
    private let mutex = NSLock()
    private let clock: VirtualClock

    init(clock: VirtualClock) { self.clock = clock }

    func lock() { mutex.lock() }
    func unlock() { mutex.unlock() }

    func wait(untilNs deadlineNs: Int64?) -> Bool {
        var released = false
        let woken = clock.block(deadline: deadlineNs, condition: ObjectIdentifier(self)) {
            mutex.unlock()
            released = true
        }
        if released { mutex.lock() }
        return woken
    }

    func broadcast() { clock.wake(condition: ObjectIdentifier(self)) }
}

/// Wall-clock nanoseconds since the Unix epoch (for `publishedNs`).
public func unixTimeNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
