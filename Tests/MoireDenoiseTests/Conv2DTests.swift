import Foundation
import MoireDenoise
import Testing

func randomTensor(_ n: Int, _ c: Int, _ h: Int, _ w: Int, seed: UInt64) -> Tensor {
    var r = SeededRandom(seed: seed)
    return Tensor(n: n, c: c, h: h, w: w, values: (0..<(n * c * h * w)).map { _ in Float(r.normal()) })
}

/// Direct convolution (zero padding k/2) as the independent reference.
func referenceConv(_ x: Tensor, _ conv: Conv2D) -> Tensor {
    let (oh, ow) = conv.outputSize(h: x.h, w: x.w)
    let y = Tensor(n: x.n, c: conv.outChannels, h: oh, w: ow)
    let k = conv.kernel
    let pad = k / 2
    for b in 0..<x.n {
        for o in 0..<conv.outChannels {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var s = Double(conv.bias[o])
                    for i in 0..<conv.inChannels {
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let iy = oy * conv.stride + ky - pad
                                let ix = ox * conv.stride + kx - pad
                                guard iy >= 0, iy < x.h, ix >= 0, ix < x.w else { continue }
                                s +=
                                    Double(conv.weights[((o * conv.inChannels + i) * k + ky) * k + kx])
                                    * Double(x[x.index(b, i, iy, ix)])
                            }
                        }
                    }
                    y[y.index(b, o, oy, ox)] = Float(s)
                }
            }
        }
    }
    return y
}

@Suite struct Conv2DTests {
    let engine: DNNLEngine
    init() throws { engine = try DNNLEngine() }

    @Test(arguments: [(3, 1), (3, 2), (1, 1)])
    func forwardMatchesDirectConvolution(kernel: Int, stride: Int) throws {
        let conv = Conv2D(engine: engine, inChannels: 3, outChannels: 4, kernel: kernel, stride: stride, seed: 7)
        for i in 0..<4 { conv.bias[i] = Float(i) * 0.1 }
        let x = randomTensor(2, 3, 9, 10, seed: 1)
        let y = try conv.forward(x)
        let r = referenceConv(x, conv)
        #expect(y.shape == r.shape)
        for i in 0..<y.count { #expect(abs(y[i] - r[i]) < 1e-4) }
    }

    @Test(arguments: [(3, 1), (3, 2), (1, 1)])
    func backwardMatchesFiniteDifferences(kernel: Int, stride s: Int) throws {
        let conv = Conv2D(engine: engine, inChannels: 2, outChannels: 3, kernel: kernel, stride: s, seed: 3)
        let x = randomTensor(1, 2, 7, 8, seed: 2)
        let y0 = try conv.forward(x)
        let r = randomTensor(y0.n, y0.c, y0.h, y0.w, seed: 9)
        func loss() throws -> Double {
            let y = try conv.forward(x)
            return (0..<y.count).reduce(0.0) { $0 + Double(y[$1]) * Double(r[$1]) }
        }
        conv.zeroGradients()
        let dx = try #require(try conv.backward(x, gradOutput: r))
        let eps: Float = 1e-2
        func numeric(_ t: Tensor, _ i: Int) throws -> Double {
            let v = t[i]
            t[i] = v + eps; let lp = try loss()
            t[i] = v - eps; let lm = try loss()
            t[i] = v
            return (lp - lm) / Double(2 * eps)
        }
        for i in stride(from: 0, to: conv.weights.count, by: 3) {
            #expect(abs(try numeric(conv.weights, i) - Double(conv.gradWeights[i])) < 2e-2, "dW[\(i)]")
        }
        for i in 0..<conv.bias.count {
            #expect(abs(try numeric(conv.bias, i) - Double(conv.gradBias[i])) < 2e-2, "db[\(i)]")
        }
        for i in stride(from: 0, to: x.count, by: 5) {
            #expect(abs(try numeric(x, i) - Double(dx[i])) < 2e-2, "dx[\(i)]")
        }
    }

    /// The inference path (LeakyReLU fused into the convolution, weights reordered only when they
    /// changed) against the direct convolution and the activation by hand, before and after the
    /// weights are changed in place as an optimiser step does.
    @Test(arguments: [(3, 1), (3, 2), (1, 1)])
    func fusedLeakyReLUMatchesDirectConvolutionAndFollowsChangedWeights(kernel: Int, stride s: Int) throws {
        let conv = Conv2D(engine: engine, inChannels: 16, outChannels: 16, kernel: kernel, stride: s, seed: 11)
        for i in 0..<16 { conv.bias[i] = Float(i - 8) * 0.05 }
        let x = randomTensor(1, 16, 12, 10, seed: 6)
        let slope: Float = 0.1
        func expectMatch() throws {
            let y = try conv.forward(x, leakyReLUSlope: slope)
            let r = referenceConv(x, conv)
            #expect(y.shape == r.shape)
            var worst: Float = 0
            for i in 0..<y.count {
                let expected = r[i] > 0 ? r[i] : slope * r[i]
                worst = max(worst, abs(y[i] - expected))
            }
            #expect(worst < 1e-4)
        }
        try expectMatch()
        for i in stride(from: 0, to: conv.weights.count, by: 7) { conv.weights[i] += 0.5 }
        try expectMatch()
    }

    @Test func firstLayerSkipsTheInputGradientAndWrongChannelsAreRejected() throws {
        let conv = Conv2D(engine: engine, inChannels: 1, outChannels: 4, seed: 1)
        let x = randomTensor(1, 1, 16, 16, seed: 4)
        let y = try conv.forward(x)
        #expect(try conv.backward(x, gradOutput: y, needInputGradient: false) == nil)
        #expect(throws: (any Error).self) { try conv.forward(randomTensor(1, 2, 16, 16, seed: 5)) }
    }

    @Test func heInitialisationIsSeededAndScaled() {
        let a = Conv2D(engine: engine, inChannels: 16, outChannels: 32, seed: 42)
        let b = Conv2D(engine: engine, inChannels: 16, outChannels: 32, seed: 42)
        #expect(a.weights.values == b.weights.values)
        let v = a.weights.values.map(Double.init)
        let variance = v.map { $0 * $0 }.reduce(0, +) / Double(v.count)
        #expect(abs(variance - 2.0 / 144) / (2.0 / 144) < 0.1)
    }
}
