import Foundation
import MoireDenoise
import Testing

@Suite struct UNetTests {
    let engine: DNNLEngine
    init() throws { engine = try DNNLEngine() }

    @Test func sizeFitsTheOnlineBudget() {
        let net = UNet(engine: engine)
        #expect(net.macsPerPixel <= 30_000)
        #expect(net.macsPerPixel > 15_000)
    }

    @Test func networkGradientsMatchFiniteDifferences() throws {
        let net = UNet(engine: engine, seed: 3)
        // Enlarge the residual branch so its gradients are well above round-off.
        for i in 0..<net.convs[8].weights.count { net.convs[8].weights[i] *= 10 }
        let x = randomTensor(1, 1, 16, 16, seed: 8)
        let r = randomTensor(1, 1, 16, 16, seed: 9)
        func loss() throws -> Double {
            let y = try net.forward(x)
            return (0..<y.count).reduce(0.0) { $0 + Double(y[$1]) * Double(r[$1]) }
        }
        net.zeroGradients()
        let cache = UNet.Cache()
        _ = try net.forward(x, cache: cache)
        try net.backward(cache, gradOutput: r)
        let eps: Float = 5e-3
        for (layer, picks) in [(0, [0, 17, 100]), (2, [5, 999]), (4, [3, 4000]), (6, [11, 20_000]), (7, [9, 5000]), (8, [0, 7])] {
            let conv = net.convs[layer]
            for i in picks where i < conv.weights.count {
                let v = conv.weights[i]
                conv.weights[i] = v + eps; let lp = try loss()
                conv.weights[i] = v - eps; let lm = try loss()
                conv.weights[i] = v
                let num = (lp - lm) / Double(2 * eps), ana = Double(conv.gradWeights[i])
                #expect(abs(num - ana) <= 0.05 * max(1, abs(ana)), "layer \(layer) weight \(i): numeric \(num) analytic \(ana)")
            }
            let v = conv.bias[0]
            conv.bias[0] = v + eps; let lp = try loss()
            conv.bias[0] = v - eps; let lm = try loss()
            conv.bias[0] = v
            let num = (lp - lm) / Double(2 * eps), ana = Double(conv.gradBias[0])
            #expect(abs(num - ana) <= 0.05 * max(1, abs(ana)), "layer \(layer) bias: numeric \(num) analytic \(ana)")
        }
    }

    @Test func inputsThatAreNotMultiplesOfFourAreRejected() throws {
        let net = UNet(engine: engine)
        #expect(throws: (any Error).self) { try net.forward(randomTensor(1, 1, 18, 16, seed: 1)) }
        #expect(throws: (any Error).self) { try net.forward(randomTensor(1, 2, 16, 16, seed: 1)) }
    }
}
