import Foundation

/// Runs `body` over `0..<n` in contiguous chunks on all cores, each chunk at least `grain` items
/// (so that a chunk's work outweighs handing it to a thread); one chunk runs on the calling thread.
public func parallelRanges(_ n: Int, grain: Int = 65_536, _ body: @Sendable (Range<Int>) -> Void) {
    let chunks = max(1, min(ProcessInfo.processInfo.activeProcessorCount * 4, n / max(1, grain)))
    guard chunks > 1 else {
        body(0..<n)
        return
    }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in body((n * c / chunks)..<(n * (c + 1) / chunks)) }
}
