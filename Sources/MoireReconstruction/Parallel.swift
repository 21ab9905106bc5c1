import Foundation

// Small kernels shared by the reconstructions: unaligned SIMD loads and stores, and a parallel loop.

@inline(__always) func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}
@inline(__always) func load4(_ p: UnsafeMutablePointer<Float>) -> SIMD4<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
}
@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// Runs `body` over `0..<n` in contiguous chunks on all cores, each chunk at least `grain` items
/// (so that a chunk's work outweighs handing it to a thread).
func parallelRanges(_ n: Int, grain: Int = 65_536, _ body: @Sendable (Range<Int>) -> Void) {
    let chunks = max(1, min(ProcessInfo.processInfo.activeProcessorCount * 4, n / max(1, grain)))
    DispatchQueue.concurrentPerform(iterations: chunks) { c in body((n * c / chunks)..<(n * (c + 1) / chunks)) }
}
