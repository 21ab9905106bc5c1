import Foundation

/// Buffers of one size that come back for reuse when the last `Data` over one is released.
///
/// A worker hands each result to ZeroMQ without a copy, and ZeroMQ's I/O thread frees it once
/// sent. Freshly allocated, a result of several megabytes is faulted in and zeroed page by page
/// by the kernel on every set (measured on `moire bench workers`: the worker's page faults were
/// its largest cost after the transfers); taken from here, the same pages serve the next set.
public final class RecycledBuffers: @unchecked Sendable {  // `free` guarded by `lock`
    public let byteCount: Int
    /// How many free buffers are kept; more that come back are deallocated.
    public let kept: Int
    private let lock = NSLock()
    private var free: [UnsafeMutableRawPointer] = []

    public init(byteCount: Int, kept: Int = 4) {
        precondition(byteCount > 0 && kept > 0, "RecycledBuffers needs buffers of at least one byte")
        self.byteCount = byteCount
        self.kept = kept
    }

    deinit {
        for buffer in free { buffer.deallocate() }
    }

    /// Free buffers waiting for reuse.
    public var freeCount: Int { lock.withLock { free.count } }

    /// `byteCount` bytes written by `fill`, which must write every one (a reused buffer holds the
    /// last set's values); the memory returns here when the `Data` and its copies are released.
    public func data(_ fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Data {
        let start =
            lock.withLock { free.popLast() }
            ?? UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        do {
            try fill(UnsafeMutableRawBufferPointer(start: start, count: byteCount))
        } catch {
            giveBack(start)
            throw error
        }
        return Data(bytesNoCopy: start, count: byteCount, deallocator: .custom { pointer, _ in self.giveBack(pointer) })
    }

    private func giveBack(_ buffer: UnsafeMutableRawPointer) {
        let keptHere = lock.withLock { () -> Bool in
            guard free.count < kept else { return false }
            free.append(buffer)
            return true
        }
        if !keptHere { buffer.deallocate() }
    }
}
