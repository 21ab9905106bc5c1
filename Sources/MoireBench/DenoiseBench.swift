import Foundation
import MoireCore
import MoireDenoise

/// `moire bench denoise`: frames per second at 512×512, inference alone and with adaptation steps, with
/// temporal context (the default network: the context's update is part of every frame).
public enum DenoiseBench {
    public struct Report: Sendable {
        public var inferenceFPS: Double; public var adaptedFPS: Double; public var steps: Int; public var crop: Int;
        public var batch: Int
    }

    public static func run(size: Int = 512, frames: Int = 20, steps: Int = 2, crop: Int = 64, batch: Int = 2) throws
        -> Report
    {
        let model = NoiseModel(offset: 100, gain: 0.5, readVariance: 1)
        var r = SeededRandom(seed: 1)
        let frame = (0..<(size * size)).map { _ in Float(100 + 10 * r.uniform()) }
        let d = Denoiser(engine: try DNNLEngine(), model: model, input: .frameAndHistory)
        d.crop = crop; d.batch = batch
        _ = try d.denoise(frame, width: size, height: size)  // primitives created
        try d.adapt(frame, width: size, height: size)
        var t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<frames { _ = try d.denoise(frame, width: size, height: size) }
        let inf = Double(frames) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<frames {
            for _ in 0..<steps { try d.adapt(frame, width: size, height: size) }
            _ = try d.denoise(frame, width: size, height: size)
        }
        let ad = Double(frames) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        return Report(inferenceFPS: inf, adaptedFPS: ad, steps: steps, crop: crop, batch: batch)
    }
}
