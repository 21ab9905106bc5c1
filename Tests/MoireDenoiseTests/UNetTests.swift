import Foundation
import MoireDenoise
import Testing

@Suite struct UNetTests {
    let engine: DNNLEngine
    init() throws { engine = try DNNLEngine() }

    @Test func sizeFitsTheOnlineBudget() {
        let single = UNet(engine: engine, input: .frame)
        #expect(single.design == .concatenating)
        #expect(single.macsPerPixel <= 30_000 && single.macsPerPixel > 15_000)
        let temporal = UNet(engine: engine, input: .frameAndHistory)
        #expect(temporal.design == .additive)
        #expect(temporal.macsPerPixel <= 16_000 && temporal.macsPerPixel > 10_000)
    }

    /// Every convolution's parameter gradients, through both decoder designs, against central
    /// differences. The activations are made linear (slope 1), so the loss is linear in each
    /// parameter and the differences are exact up to rounding: what is checked is the backward
    /// pass's plumbing (skips, concatenation and its split, projections, upsampling, the residual);
    /// LeakyReLU's own gradient is checked in LayerTests. The loss goes through the training
    /// forward pass, the function backward differentiates (inference may run Winograd, whose
    /// rounding differs by 1e-5 and would show in the differences).
    @Test(arguments: UNet.Input.allCases)
    func networkGradientsMatchFiniteDifferences(input: UNet.Input) throws {
        let net = UNet(engine: engine, input: input, seed: 3, leakyReLUSlope: 1)
        let x = randomTensor(1, input.rawValue, 16, 16, seed: 8)
        let r = randomTensor(1, 1, 16, 16, seed: 9)
        func loss() throws -> Double {
            let y = try net.forward(x, cache: UNet.Cache())
            return (0..<y.count).reduce(0.0) { $0 + Double(y[$1]) * Double(r[$1]) }
        }
        net.zeroGradients()
        let cache = UNet.Cache()
        _ = try net.forward(x, cache: cache)
        try net.backward(cache, gradOutput: r)
        let eps: Float = 1e-2
        func expectMatch(_ analytic: Float, _ perturb: (Float) -> Void, _ what: String) throws {
            perturb(eps)
            let lp = try loss()
            perturb(-2 * eps)
            let lm = try loss()
            perturb(eps)
            let numeric = (lp - lm) / Double(2 * eps)
            #expect(
                abs(numeric - Double(analytic)) <= 0.02 * max(0.05, abs(Double(analytic))),
                "\(what): numeric \(numeric) analytic \(analytic)")
        }
        for (layer, conv) in net.convs.enumerated() {
            for i in [0, conv.weights.count / 3, conv.weights.count - 1] {
                try expectMatch(conv.gradWeights[i], { conv.weights[i] += $0 }, "\(input) layer \(layer) weight \(i)")
            }
            try expectMatch(conv.gradBias[0], { conv.bias[0] += $0 }, "\(input) layer \(layer) bias")
        }
    }

    @Test func inputsThatAreNotMultiplesOfFourAreRejected() throws {
        let net = UNet(engine: engine)
        #expect(throws: (any Error).self) { try net.forward(randomTensor(1, 1, 18, 16, seed: 1)) }
        #expect(throws: (any Error).self) { try net.forward(randomTensor(1, 2, 16, 16, seed: 1)) }
    }
}
