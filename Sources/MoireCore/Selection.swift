/// Order statistics without a full sort, and a vector check for non-finite values: per-frame passes
/// that need a median or a guard, where sorting or a per-element test would cost more than the pass.
extension MutableCollection where Self: RandomAccessCollection, Index == Int {
    /// Reorders the collection so that the element at `k` is the one a sort by `areInIncreasingOrder`
    /// would put there, every element before it is not ordered after it and every element after it
    /// is not ordered before it (quickselect with a median-of-three pivot and a three-way partition,
    /// so that many equal elements cost no more than distinct ones; linear time on average).
    @inlinable
    public mutating func select(_ k: Int, by areInIncreasingOrder: (Element, Element) -> Bool) {
        precondition(indices.contains(k), "selection index \(k) outside \(indices)")
        var low = startIndex
        var high = endIndex - 1
        while high > low {
            let middle = low + (high - low) / 2
            if areInIncreasingOrder(self[middle], self[low]) { swapAt(middle, low) }
            if areInIncreasingOrder(self[high], self[low]) { swapAt(high, low) }
            if areInIncreasingOrder(self[high], self[middle]) { swapAt(high, middle) }
            let pivot = self[middle]
            // [low, less): before the pivot; [less, i): equal to it; (greater, high]: after it.
            var less = low
            var i = low
            var greater = high
            while i <= greater {
                if areInIncreasingOrder(self[i], pivot) {
                    swapAt(i, less)
                    less += 1
                    i += 1
                } else if areInIncreasingOrder(pivot, self[i]) {
                    swapAt(i, greater)
                    greater -= 1
                } else {
                    i += 1
                }
            }
            if k < less {
                high = less - 1
            } else if k > greater {
                low = greater + 1
            } else {
                return
            }
        }
    }
}

extension MutableCollection where Self: RandomAccessCollection, Index == Int, Element: Comparable {
    /// `select(k, by: <)`.
    @inlinable
    public mutating func select(_ k: Int) { select(k, by: <) }
}

/// The median (the element at `count / 2` in ascending order) of `values`; nil when empty.
@inlinable
public func median<Value: Comparable>(of values: [Value]) -> Value? {
    guard !values.isEmpty else { return nil }
    var copy = values
    copy.select(copy.count / 2)
    return copy[copy.count / 2]
}

/// Whether every value is finite (no NaN, no infinity): eight values at a time, x·0 being 0 for a
/// finite x and NaN otherwise.
public func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
    guard let base = values.baseAddress else { return true }
    let vectors = values.count / 8
    var accumulated = SIMD8<Float>()
    let raw = UnsafeRawPointer(base)
    for v in 0..<vectors {
        accumulated += raw.loadUnaligned(fromByteOffset: 32 * v, as: SIMD8<Float>.self) * 0
    }
    var tail: Float = 0
    for i in (8 * vectors)..<values.count { tail += values[i] * 0 }
    return accumulated.sum().isFinite && tail.isFinite
}

/// `allFinite` of an array.
public func allFinite(_ values: [Float]) -> Bool {
    values.withUnsafeBufferPointer { allFinite($0) }
}
