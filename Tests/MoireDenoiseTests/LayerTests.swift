import Foundation
import MoireDenoise
import Testing

/// Central finite differences of L = Σ f(x)·r against the analytic input gradient, at every `every`-th element.
func checkInputGradient(
    _ x: Tensor, every: Int = 3, tolerance: Double = 2e-2,
    forward: (Tensor) throws -> Tensor, backward: (Tensor, Tensor) throws -> Tensor
) throws {
    let y = try forward(x)
    let r = randomTensor(y.n, y.c, y.h, y.w, seed: 77)
    let dx = try backward(x, r)
    let eps: Float = 1e-2
    for i in stride(from: 0, to: x.count, by: every) {
        let v = x[i]
        x[i] = v + eps; let yp = try forward(x)
        x[i] = v - eps; let ym = try forward(x)
        x[i] = v
        var num = 0.0
        for j in 0..<yp.count { num += (Double(yp[j]) - Double(ym[j])) * Double(r[j]) }
        num /= Double(2 * eps)
        #expect(abs(num - Double(dx[i])) < tolerance, "element \(i): numeric \(num) analytic \(dx[i])")
    }
}

@Suite struct LayerTests {
    let engine: DNNLEngine
    init() throws { engine = try DNNLEngine() }

    @Test func leakyReLUForwardAndGradient() throws {
        let act = Activation(engine: engine, alpha: 0.1)
        let x = randomTensor(1, 2, 5, 6, seed: 3)
        for i in 0..<x.count where abs(x[i]) < 0.05 { x[i] = 0.3 }  // keep away from the kink
        let y = try act.forward(x)
        for i in 0..<x.count { #expect(y[i] == (x[i] > 0 ? x[i] : 0.1 * x[i])) }
        try checkInputGradient(
            x, every: 1, forward: { try act.forward($0) }, backward: { try act.backward($0, gradOutput: $1) })
    }

    @Test func upsampleForwardAndGradient() throws {
        let up = Upsample2x(engine: engine)
        let x = randomTensor(1, 2, 3, 4, seed: 5)
        let y = try up.forward(x)
        #expect(y.shape == [1, 2, 6, 8])
        #expect(y[y.index(0, 1, 5, 7)] == x[x.index(0, 1, 2, 3)] && y[y.index(0, 0, 2, 3)] == x[x.index(0, 0, 1, 1)])
        try checkInputGradient(
            x, every: 1, forward: { try up.forward($0) }, backward: { try up.backward($0, gradOutput: $1) })
    }

    @Test func residualAddReadsTheFirstChannelAndAddChecksShapes() throws {
        let a = randomTensor(2, 2, 3, 3, seed: 1)
        let b = randomTensor(2, 3, 3, 3, seed: 2)
        let r = randomTensor(2, 1, 3, 3, seed: 3)
        let y = try TensorOps.firstChannel(of: b, plus: r)
        #expect(y.shape == [2, 1, 3, 3])
        for n in 0..<2 {
            for row in 0..<3 {
                for column in 0..<3 {
                    let expected = b[b.index(n, 0, row, column)] + r[r.index(n, 0, row, column)]
                    #expect(y[y.index(n, 0, row, column)] == expected)
                }
            }
        }
        #expect(throws: (any Error).self) { try TensorOps.firstChannel(of: b, plus: a) }
        #expect(throws: (any Error).self) { try TensorOps.add(a, b) }
        #expect(try TensorOps.add(a, a).values == a.values.map { $0 * 2 })
    }

    /// The decoder's one-pass upsample-and-add equals the upsampling followed by the sum, on
    /// tensors big enough to be split across threads (rows, images and channels at chunk edges).
    @Test func upsampledSumEqualsUpsamplingThenAdding() throws {
        let up = Upsample2x(engine: engine)
        // Channel counts in eights (the vector pass) and not (the element pass).
        for (n, c, h, w) in [(2, 16, 32, 48), (1, 32, 64, 64), (3, 1, 40, 24), (1, 12, 20, 18)] {
            let coarse = randomTensor(n, c, h, w, seed: UInt64(7 + c))
            let skip = randomTensor(n, c, 2 * h, 2 * w, seed: UInt64(11 + c))
            let expected = try TensorOps.add(try up.forward(coarse), skip)
            let fused = try TensorOps.upsampledSum(coarse, skip)
            #expect(fused.shape == skip.shape)
            #expect(fused.values == expected.values, "\(n)×\(c)×\(h)×\(w)")
            // In place (inference): the same sum, written over the skip.
            let overSkip = try TensorOps.upsampledSum(coarse, skip, inPlace: true)
            #expect(overSkip === skip)
            #expect(skip.values == expected.values, "in place \(n)×\(c)×\(h)×\(w)")
        }
        let coarse = randomTensor(1, 4, 5, 6, seed: 1)
        #expect(throws: (any Error).self) { try TensorOps.upsampledSum(coarse, randomTensor(1, 4, 10, 11, seed: 2)) }
        #expect(throws: (any Error).self) { try TensorOps.upsampledSum(coarse, randomTensor(1, 3, 10, 12, seed: 2)) }
        // The element-wise sums split across threads too: every element, chunk edges included.
        let big = randomTensor(1, 16, 128, 96, seed: 3)
        let other = randomTensor(1, 16, 128, 96, seed: 4)
        let sum = try TensorOps.add(big, other)
        #expect(sum.values == zip(big.values, other.values).map { $0 + $1 })
        let residual = randomTensor(1, 1, 128, 96, seed: 5)
        let withResidual = try TensorOps.firstChannel(of: big, plus: residual)
        #expect(withResidual.values == (0..<residual.count).map { big[$0 * 16] + residual[$0] })
    }

    @Test func adamMinimisesAQuadratic() {
        let p = Tensor(n: 1, c: 1, h: 1, w: 3, values: [3, -2, 1])
        let g = Tensor(n: 1, c: 1, h: 1, w: 3)
        let target: [Float] = [0.5, 0.25, -1]
        let opt = Adam(parameters: [(p, g)], learningRate: 0.05)
        for _ in 0..<600 {
            for i in 0..<3 { g[i] = 2 * (p[i] - target[i]) }
            opt.update()
        }
        for i in 0..<3 { #expect(abs(p[i] - target[i]) < 1e-2) }
        #expect(opt.step == 600)
    }
}
