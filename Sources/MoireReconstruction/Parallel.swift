import Foundation

// Small kernels shared by the reconstructions: unaligned SIMD loads and stores (the parallel loop,
// `parallelRanges`, is MoireCore's).

@inline(__always) func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}
@inline(__always) func load4(_ p: UnsafeMutablePointer<Float>) -> SIMD4<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
}
@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// The smallest and largest of the values seen and whether every one was finite (v − v is 0
/// only for a finite v), gathered eight lanes at a time with a scalar tail.
struct ValueRange {
    private var low = SIMD8<Float>(repeating: .infinity)
    private var high = SIMD8<Float>(repeating: -.infinity)
    private var finite = SIMDMask<SIMD8<Int32>>(repeating: true)
    private var tail: (low: Float, high: Float, finite: Bool) = (.infinity, -.infinity, true)

    @inline(__always) mutating func add(_ v: SIMD8<Float>) {
        low = low.replacing(with: v, where: v .< low)
        high = high.replacing(with: v, where: v .> high)
        finite = finite .& (v - v .== 0)
    }

    @inline(__always) mutating func add(_ v: Float) {
        tail = (min(tail.low, v), max(tail.high, v), tail.finite && v.isFinite)
    }

    /// (smallest, largest, all finite).
    var found: (Float, Float, Bool) {
        (min(low.min(), tail.low), max(high.max(), tail.high), all(finite) && tail.finite)
    }
}
