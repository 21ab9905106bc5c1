import MoireCore
import Testing

struct SelectionTests {
    /// The selected element is the one a sort puts at k, with nothing out of order on either side,
    /// for distinct values, many duplicates, sorted and reversed input, and every k of small arrays.
    @Test func selectionAgreesWithSorting() {
        var generator = SystemRandomNumberGenerator()
        var cases: [[Float]] = [
            (0..<1000).map { _ in Float.random(in: -5...5, using: &generator) },
            (0..<1000).map { _ in Float(Int.random(in: 0...3, using: &generator)) },
            [Float](repeating: 2, count: 500),
            (0..<300).map(Float.init),
            (0..<300).map { Float(300 - $0) },
        ]
        cases += (1...9).map { n in (0..<n).map { _ in Float(Int.random(in: 0...4, using: &generator)) } }
        for values in cases {
            let sorted = values.sorted()
            for k in Set([0, values.count / 2, values.count - 1] + (values.count < 10 ? Array(values.indices) : [])) {
                var selected = values
                selected.select(k)
                #expect(selected[k] == sorted[k], "k \(k) of \(values.count)")
                #expect(selected[..<k].allSatisfy { $0 <= selected[k] })
                #expect(selected[(k + 1)...].allSatisfy { $0 >= selected[k] })
                #expect(selected.sorted() == sorted, "a permutation of the input")
            }
        }
        #expect(median(of: [3, 1, 2]) == 2)
        #expect(median(of: [4, 1, 3, 2]) == 3)
        #expect(median(of: [Float]()) == nil)
    }

    /// Descending order through the comparison: the k largest come first.
    @Test func selectionByAComparison() {
        var values: [Float] = [5, 9, 1, 7, 3, 8, 2]
        values.select(2, by: >)
        #expect(values[2] == 7)
        #expect(Set(values[..<2]) == [9, 8])
    }

    /// A NaN or an infinity anywhere (in the vector body or the tail) is found; finite values pass.
    @Test func finiteCheckFindsEveryNonFiniteValue() {
        let finite = (0..<37).map { Float($0) * 1e30 - 3e31 }
        #expect(allFinite(finite))
        #expect(allFinite([]))
        for position in [0, 7, 8, 31, 32, 36] {
            for bad in [Float.nan, .infinity, -.infinity] {
                var values = finite
                values[position] = bad
                #expect(!allFinite(values), "\(bad) at \(position)")
            }
        }
    }
}
