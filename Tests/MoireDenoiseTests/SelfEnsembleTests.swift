import Foundation
import MoireDenoise
import Testing

/// The geometric self-ensemble: the mean of the network's outputs over the frame's eight rotations
/// and mirror images, each turned back. The reference turns the frame with its own index formulas
/// (a quarter turn: row r, column c of a H × W image goes to row W − 1 − c, column r).
@Suite struct SelfEnsembleTests {
    let engine: DNNLEngine
    init() throws { engine = try DNNLEngine() }

    /// A quarter turn counter-clockwise of a `height × width` image.
    static func quarterTurn(_ image: [Float], height: Int, width: Int) -> [Float] {
        var out = [Float](repeating: 0, count: image.count)
        for r in 0..<height { for c in 0..<width { out[(width - 1 - c) * height + r] = image[r * width + c] } }
        return out
    }

    static func mirrored(_ image: [Float], height: Int, width: Int) -> [Float] {
        var out = image
        for r in 0..<height { for c in 0..<width { out[r * width + (width - 1 - c)] = image[r * width + c] } }
        return out
    }

    @Test func theEnsembleIsTheMeanOverTheEightTurnedAndMirroredFrames() throws {
        let (height, width) = (12, 16)  // not square: a quarter turn swaps the sides
        var random = SeededRandom(seed: 4)
        let frame = (0..<(height * width)).map { _ in Float(100 + 40 * random.uniform()) }
        let model = NoiseModel(offset: 100, gain: 0.5, readVariance: 0.5)
        let denoiser = Denoiser(engine: engine, model: model, seed: 5)
        denoiser.selfEnsemble = true
        let ensemble = try denoiser.denoise(frame, width: width, height: height)
        denoiser.selfEnsemble = false
        let single = try denoiser.denoise(frame, width: width, height: height)
        var sum = [Float](repeating: 0, count: frame.count)
        for mirror in [false, true] {
            var image = mirror ? Self.mirrored(frame, height: height, width: width) : frame
            var (h, w) = (height, width)
            for turns in 0..<4 {
                var out = try denoiser.denoise(image, width: w, height: h)
                // Back: the remaining quarter turns to a full one, then the mirror again.
                var (oh, ow) = (h, w)
                for _ in 0..<((4 - turns) % 4) {
                    out = Self.quarterTurn(out, height: oh, width: ow)
                    (oh, ow) = (ow, oh)
                }
                if mirror { out = Self.mirrored(out, height: height, width: width) }
                for i in 0..<sum.count { sum[i] += out[i] }
                image = Self.quarterTurn(image, height: h, width: w)
                (h, w) = (w, h)
            }
        }
        let reference = sum.map { $0 / 8 }
        let worst = zip(ensemble, reference).map { abs($0 - $1) }.max()!
        let fromSingle = zip(ensemble, single).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-3, "largest difference from the eight passes' mean \(worst)")
        #expect(fromSingle > 10 * worst, "the ensemble equals one pass (\(fromSingle)): nothing was averaged")
    }
}
