import Foundation
import MoireCore
import MoireDenoise

/// `moire bench denoise`: frames per second at 512×512, inference alone and with adaptation steps, with
/// temporal context (the default network: the context's update is part of every frame).
public enum DenoiseBench {
    /// A denoiser with its primitives made, timed one frame at a time.
    public final class Session {
        public let size: Int
        public let steps: Int
        public let crop: Int
        public let batch: Int
        let denoiser: Denoiser
        let frame: [Float]

        public init(size: Int = 512, steps: Int = 2, crop: Int = 64, batch: Int = 2) throws {
            let model = NoiseModel(offset: 100, gain: 0.5, readVariance: 1)
            var random = SeededRandom(seed: 1)
            frame = (0..<(size * size)).map { _ in Float(100 + 10 * random.uniform()) }
            denoiser = Denoiser(engine: try DNNLEngine(), model: model, input: .frameAndHistory)
            denoiser.crop = crop
            denoiser.batch = batch
            self.size = size
            self.steps = steps
            self.crop = crop
            self.batch = batch
            _ = try denoiser.denoise(frame, width: size, height: size)  // primitives created
            try denoiser.adapt(frame, width: size, height: size)
        }

        /// Which of the network's convolutions run through Winograd in inference, e.g. "Winograd in 5 of 9".
        public var convolutions: String {
            let winograd = denoiser.net.convs.filter(\.runsWinograd).count
            return winograd == 0 ? "all direct (oneDNN)" : "Winograd in \(winograd) of \(denoiser.net.convs.count)"
        }

        /// One frame denoised; its milliseconds.
        public func inferenceMs() throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try denoiser.denoise(frame, width: size, height: size)
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        }

        /// `steps` adaptation steps, then one frame denoised; their milliseconds.
        public func adaptedMs() throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<steps { try denoiser.adapt(frame, width: size, height: size) }
            _ = try denoiser.denoise(frame, width: size, height: size)
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        }
    }
}
