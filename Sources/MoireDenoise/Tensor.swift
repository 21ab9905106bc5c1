import Foundation
import MoireCore

/// An NCHW float32 tensor in 64-byte aligned memory (what oneDNN reads and writes in place).
public final class Tensor: @unchecked Sendable {
    public let n: Int, c: Int, h: Int, w: Int
    public let data: UnsafeMutablePointer<Float>
    public var count: Int { n * c * h * w }
    public var shape: [Int] { [n, c, h, w] }

    public init(n: Int, c: Int, h: Int, w: Int, fill: Float = 0) {
        precondition(n > 0 && c > 0 && h > 0 && w > 0, "tensor dimensions must be positive")
        self.n = n; self.c = c; self.h = h; self.w = w
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * c * h * w * 4, alignment: 64)
        data = raw.bindMemory(to: Float.self, capacity: n * c * h * w)
        data.initialize(repeating: fill, count: n * c * h * w)
    }

    public convenience init(n: Int, c: Int, h: Int, w: Int, values: [Float]) {
        self.init(n: n, c: c, h: h, w: w)
        precondition(values.count == count, "tensor of \(count) values given \(values.count)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    deinit { UnsafeMutableRawPointer(data).deallocate() }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    @inline(__always) public func index(_ b: Int, _ ch: Int, _ y: Int, _ x: Int) -> Int { ((b * c + ch) * h + y) * w + x }

    public var values: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
    public func zero() { data.update(repeating: 0, count: count) }
}

/// A small deterministic generator for initialisation (splitmix64 → uniform, Box–Muller → normal).
public struct SeededRandom: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    public mutating func normal() -> Double {
        (-2 * log(max(uniform(), 1e-300))).squareRoot() * cos(2 * .pi * uniform())
    }
}
