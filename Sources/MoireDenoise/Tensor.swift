import Foundation
import MoireCore

/// A float32 tensor with logical dimensions N, C, H, W in 64-byte aligned memory (what oneDNN reads and
/// writes in place). Activations are stored channels-last (`nhwc`: oneDNN's fast AVX-512/AVX2
/// convolutions read it directly); weights are stored `nchw` (OIHW). For one channel both are the same.
// Not Sendable: a oneDNN memory buffer, written by one thread at a time (its network's); readers get copies.
public final class Tensor {
    public enum Layout: Sendable { case nchw, nhwc }
    public let n: Int, c: Int, h: Int, w: Int
    public let layout: Layout
    public let data: UnsafeMutablePointer<Float>
    public var count: Int { n * c * h * w }
    public var shape: [Int] { [n, c, h, w] }

    public init(n: Int, c: Int, h: Int, w: Int, layout: Layout = .nhwc, fill: Float = 0) {
        precondition(n > 0 && c > 0 && h > 0 && w > 0, "tensor dimensions must be positive")
        self.n = n; self.c = c; self.h = h; self.w = w; self.layout = layout
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * c * h * w * 4, alignment: 64)
        data = raw.bindMemory(to: Float.self, capacity: n * c * h * w)
        data.initialize(repeating: fill, count: n * c * h * w)
    }

    /// A tensor from values in its memory order.
    public convenience init(n: Int, c: Int, h: Int, w: Int, layout: Layout = .nhwc, values: [Float]) {
        self.init(n: n, c: c, h: h, w: w, layout: layout)
        precondition(values.count == count, "tensor of \(count) values given \(values.count)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    deinit { UnsafeMutableRawPointer(data).deallocate() }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    /// A tensor of the same shape and layout, zero-filled.
    public func like() -> Tensor { Tensor(n: n, c: c, h: h, w: w, layout: layout) }

    /// The memory offset of element (batch, channel, row, column).
    @inline(__always) public func index(_ b: Int, _ ch: Int, _ y: Int, _ x: Int) -> Int {
        layout == .nchw ? ((b * c + ch) * h + y) * w + x : ((b * h + y) * w + x) * c + ch
    }

    public var values: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
    public func zero() { data.update(repeating: 0, count: count) }
}

/// Reused activation memory. A pass through the network asks for the same shapes in the same order
/// every time; the workspace hands out the tensors of the previous pass again (contents undefined:
/// every layer overwrites its output), so a frame costs no allocation and no page faults. One pass
/// at a time: `reset()` starts the next, and tensors from the previous pass are then reused.
// Not Sendable: scratch buffers of one network, used by that network's one thread.
public final class Workspace {
    private var slots: [Tensor] = []
    private var next = 0
    public init() {}
    public func reset() { next = 0 }

    public func tensor(n: Int, c: Int, h: Int, w: Int, layout: Tensor.Layout = .nhwc) -> Tensor {
        defer { next += 1 }
        if next < slots.count {
            let t = slots[next]
            if t.n == n, t.c == c, t.h == h, t.w == w, t.layout == layout { return t }
            slots[next] = Tensor(n: n, c: c, h: h, w: w, layout: layout)
            return slots[next]
        }
        slots.append(Tensor(n: n, c: c, h: h, w: w, layout: layout))
        return slots[next]
    }

    /// A tensor shaped like `t`.
    public func like(_ t: Tensor) -> Tensor { tensor(n: t.n, c: t.c, h: t.h, w: t.w, layout: t.layout) }
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
