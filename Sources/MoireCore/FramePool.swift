import Foundation
import Synchronization

/// A preallocated ring of frame buffers: the camera fills slots, consumers release them.
///
/// No allocation happens after `init`. A slot is handed out with one reference; every extra
/// consumer `retain`s it and every consumer `release`s it; at zero it is free again.
/// `acquire()` never blocks: when every slot is in use it returns nil and the caller counts
/// the frame as lost (real hardware cannot wait). `acquire(waitingUpToSeconds:)` blocks until a
/// consumer frees a slot (simulated hardware in virtual time: backpressure instead of loss).
public final class FramePool: @unchecked Sendable {  // slots under `lock` (Mutex), counters atomic
    // The slot memory and reference counts are guarded by `lock`; the counters are atomics.
    public let slotCount: Int
    public let slotBytes: Int
    private let storage: UnsafeMutableRawPointer
    private let refCounts: UnsafeMutablePointer<Int>
    private let lock = Mutex<[Int]>([])
    private let exhausted = Atomic<Int>(0)
    private let waited = Atomic<Int>(0)
    /// Producers blocked in `acquire(waitingUpToSeconds:)`; a release wakes them through `slotFreed`.
    private let blockedProducers = Atomic<Int>(0)
    private let slotFreed = NSCondition()

    /// Creates `slots` buffers of `bytes` bytes each, 64-byte aligned.
    public init(slots: Int, bytes: Int) {
        precondition(slots > 0 && bytes > 0, "FramePool needs at least one slot of at least one byte")
        slotCount = slots
        slotBytes = (bytes + 63) / 64 * 64
        storage = UnsafeMutableRawPointer.allocate(byteCount: slotCount * slotBytes, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: slotCount * slotBytes)
        refCounts = .allocate(capacity: slots)
        refCounts.initialize(repeating: 0, count: slots)
        lock.withLock { $0 = Array((0..<slots).reversed()) }
    }

    deinit {
        storage.deallocate()
        refCounts.deallocate()
    }

    /// Takes a free slot with one reference, or nil (counted as exhaustion) when all are in use.
    public func acquire() -> FrameSlot? {
        guard let slot = take() else {
            exhausted.add(1, ordering: .relaxed)
            return nil
        }
        return slot
    }

    /// Takes a free slot, waiting for a consumer to free one when all are in use; nil (counted as
    /// exhaustion) only when none came back within `seconds` of wall time (a hang watchdog).
    public func acquire(waitingUpToSeconds seconds: Double) -> FrameSlot? {
        if let slot = take() { return slot }
        waited.add(1, ordering: .relaxed)
        let deadline = Date(timeIntervalSinceNow: seconds)
        slotFreed.lock()
        defer { slotFreed.unlock() }
        blockedProducers.add(1, ordering: .sequentiallyConsistent)
        defer { blockedProducers.subtract(1, ordering: .sequentiallyConsistent) }
        while true {
            if let slot = take() { return slot }
            if !slotFreed.wait(until: deadline), Date() >= deadline {
                exhausted.add(1, ordering: .relaxed)
                return nil
            }
        }
    }

    /// Takes a slot as a device timed by a clock with `backpressure` does: `.drop` never waits,
    /// `.block` waits for a consumer (up to the hang watchdog).
    public func acquire(for backpressure: Backpressure) -> FrameSlot? {
        switch backpressure {
        case .drop: acquire()
        case .block: acquire(waitingUpToSeconds: hangWatchdogSeconds)
        }
    }

    private func take() -> FrameSlot? {
        let index: Int? = lock.withLock { free in
            guard let i = free.popLast() else { return nil }
            refCounts[i] = 1
            return i
        }
        return index.map { FrameSlot(pool: self, index: $0) }
    }

    /// Adds `count` references to a slot (one per extra consumer).
    public func retain(_ index: Int, count: Int = 1) {
        lock.withLock { _ in
            precondition(refCounts[index] > 0, "retain of a free FramePool slot")
            refCounts[index] += count
        }
    }

    /// Drops one reference; the slot is free again at zero.
    public func release(_ index: Int) {
        lock.withLock { free in
            precondition(refCounts[index] > 0, "release of a free FramePool slot")
            refCounts[index] -= 1
            if refCounts[index] == 0 { free.append(index) }
        }
        if blockedProducers.load(ordering: .sequentiallyConsistent) > 0 {
            slotFreed.lock()
            slotFreed.broadcast()
            slotFreed.unlock()
        }
    }

    /// Slots currently free.
    public var freeCount: Int { lock.withLock { $0.count } }
    /// How many times a slot was asked for and none was given (a frame lost to exhaustion).
    public var exhaustedCount: Int { exhausted.load(ordering: .relaxed) }
    /// How many times a producer had to wait for a consumer to free a slot (backpressure).
    public var waitedCount: Int { waited.load(ordering: .relaxed) }

    /// Base address of a slot; valid while the caller holds a reference.
    public func address(of index: Int) -> UnsafeMutableRawPointer {
        storage + index * slotBytes
    }
}

/// One referenced slot of a `FramePool`.
public struct FrameSlot: Sendable {
    public let pool: FramePool
    public let index: Int

    /// Raw bytes of the slot, for the duration of `body`.
    public func withBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: pool.address(of: index), count: pool.slotBytes))
    }

    public func retain(count: Int = 1) { pool.retain(index, count: count) }
    public func release() { pool.release(index) }
}

/// A frame: its header and the pooled slot that holds its pixels (nil for a missing frame).
public struct Frame: Sendable {
    public var header: FrameHeader
    public var slot: FrameSlot?

    public init(header: FrameHeader, slot: FrameSlot?) {
        self.header = header
        self.slot = slot
    }

    /// The payload bytes (empty for a missing frame), for the duration of `body`.
    public func withPayload<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        guard let slot, !header.missing else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try slot.withBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<header.byteCount])) }
    }

    /// Releases this frame's reference to its slot.
    public func release() { slot?.release() }
}
