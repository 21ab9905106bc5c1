import Foundation
import MoireDenoise
import Testing

/// The Winograd F(4×4, 3×3) inference convolution (AVX2 machines) against the direct reference:
/// borders and sizes that are not multiples of the 4×4 tile, batches, channel counts of 8 to 64,
/// LeakyReLU slopes 0, 0.1 and 1; and a whole network through it against the same network direct.
@Suite(.enabled(if: Conv2D.winogradSupported, "this CPU has no AVX2 and FMA")) struct WinogradTests {
    let engine: DNNLEngine
    init() throws { engine = try DNNLEngine() }

    @Test(arguments: [
        (2, 8, 16, 9, 10, Float(0.1)), (1, 16, 16, 12, 12, Float(1)), (1, 32, 24, 7, 5, Float(0)),
        (1, 64, 64, 17, 13, Float(0.1)), (3, 16, 8, 4, 4, Float(0.1)), (1, 8, 8, 1, 6, Float(0.1)),
    ])
    func matchesTheDirectConvolution(batch: Int, inChannels: Int, outChannels: Int, h: Int, w: Int, slope: Float) throws {
        let conv = Conv2D(engine: engine, inChannels: inChannels, outChannels: outChannels, seed: 11)
        conv.convolution = .winograd
        for i in 0..<outChannels { conv.bias[i] = Float(i % 5) * 0.1 - 0.2 }
        let x = randomTensor(batch, inChannels, h, w, seed: 5)
        #expect(conv.runsWinograd)
        let y = try conv.forward(x, leakyReLUSlope: slope)
        #expect(conv.winogradPasses == 1, "the kernel declined and oneDNN ran instead")
        let reference = referenceConv(x, conv)
        #expect(y.shape == reference.shape)
        var worst: Float = 0
        for b in 0..<batch {
            for o in 0..<outChannels {
                for row in 0..<h {
                    for column in 0..<w {
                        let z = reference[reference.index(b, o, row, column)]
                        let expected = z >= 0 ? z : slope * z
                        worst = max(worst, abs(y[y.index(b, o, row, column)] - expected))
                    }
                }
            }
        }
        #expect(worst < 1e-4, "largest difference \(worst)")
    }

    /// New weights (an adaptation step) are transformed again before the next pass.
    @Test func changedWeightsAreTransformedAgain() throws {
        let conv = Conv2D(engine: engine, inChannels: 16, outChannels: 16, seed: 3)
        conv.convolution = .winograd
        let x = randomTensor(1, 16, 8, 8, seed: 2)
        _ = try conv.forward(x, leakyReLUSlope: 1)
        for i in 0..<conv.weights.count { conv.weights[i] *= -0.5 }
        let y = try conv.forward(x, leakyReLUSlope: 1)
        let reference = referenceConv(x, conv)
        let worst = (0..<y.count).map { abs(y[$0] - reference[reference.index(0, $0 % 16, $0 / 16 / 8, $0 / 16 % 8)]) }
            .max()!
        #expect(conv.winogradPasses == 2)
        #expect(worst < 1e-4, "largest difference \(worst)")
    }

    @Test func theTemporalNetworkGivesTheSameFrameThroughWinogradAsDirect() throws {
        let net = UNet(engine: engine, input: .frameAndHistory, seed: 4)
        let x = randomTensor(1, 2, 40, 36, seed: 6)
        func denoised(_ choice: InferenceConvolution) throws -> Tensor {
            for conv in net.convs { conv.convolution = choice }
            return try net.forward(x)
        }
        let direct = try denoised(.direct)
        let winograd = try denoised(.winograd)
        #expect(net.convs.filter { $0.winogradPasses > 0 }.count == 5)
        let worst = (0..<direct.count).map { abs(direct[$0] - winograd[$0]) }.max()!
        #expect(worst < 1e-4, "largest difference \(worst)")
    }
}
