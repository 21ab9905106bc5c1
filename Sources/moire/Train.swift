import ArgumentParser
import Foundation
import MoireCore
import MoireDenoise
import MoirePipeline
import MoireStorage

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the denoiser self-supervised on a recording or TIFF/MRC stack and save its weights.")

    @Argument(help: "Recording (.ome.tif) or plain stack (.tif, .mrc).") var input: String
    @Option(name: .long, help: "Weights file to write.") var out: String
    @Option(name: .long, help: "Training steps.") var steps = 500
    @Option(name: .long, help: "Crop size (multiple of 4).") var crop = 128
    @Option(name: .long, help: "Crops per step.") var batch = 1
    @Option(name: .long, help: "Starting learning rate.") var lr: Float = 3e-3
    @Option(name: .long, help: "Factor the learning rate decays by over the run (exponentially).") var decay: Float =
        0.05
    @Option(name: .long, help: "Weight averaging of the saved weights (EMA decay; 0: the last weights).") var averaging:
        Float = 0.99
    @Option(name: .long, help: "Start from these weights.") var weights: String?
    @Option(name: .long, help: "Camera noise: OFFSET,GAIN,READ or auto (default: the recording's camera, else auto).")
    var noise: String?
    @Option(name: .long, help: "Write the loss curve (step, loss) as CSV.") var lossCurve: String?
    @Option(name: .long, help: "Seed.") var seed: UInt64 = 1
    @OptionGroup var training: TrainingPairArguments

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            let stack = try ImageImport.load(input)
            guard let first = stack.planes.first, min(stack.width, stack.height) >= 16, crop % 4 == 0, crop >= 16 else {
                throw MoireError(
                    .usage, "the crop must be a multiple of 4 of at least 16, and the planes at least 16×16",
                    place: input)
            }
            let crop = min(self.crop, min(stack.width, stack.height) / 4 * 4)
            var job = OfflineDenoise()
            if let noise { job.noise = try parseNoise(noise).map { .fixed($0) } ?? .auto }
            try training.apply(to: &job)
            let model = try job.noiseModel(input: input, first: first, width: stack.width, height: stack.height)
            let d = Denoiser(engine: try DNNLEngine(), model: model, seed: seed)
            d.crop = crop; d.batch = batch; d.learningRate = lr; d.decay = (decay, steps); d.averaging = averaging
            if let weights { try WeightsFile.load(absolute(weights), into: d.net) }
            if job.deconvolve { d.deconvolution = try job.deconvolutionLoss(input: input, pixelUm: stack.pixelSizeUm) }
            if job.pairs == .neighbour { d.crop = min(d.crop, (min(stack.width, stack.height) / 8) * 4) }
            let usable = stack.planes.filter { p in p.allSatisfy(\.isFinite) && (p.max() ?? 0) > (p.min() ?? 0) }
            guard !usable.isEmpty else {
                throw MoireError(.numeric, "no usable (finite, non-blank) plane to train on", place: input)
            }
            var curve = "step,loss\n"
            var smoothed = Double.nan
            let bar = max(1, steps / 50)
            for s in 0..<steps {
                let i = s % usable.count
                let loss = try job.adaptStep(
                    d, plane: usable[i],
                    partner: usable.count > 1 ? usable[OfflineDenoise.partner(of: i, count: usable.count)] : nil,
                    width: stack.width, height: stack.height, seed: seed &+ UInt64(s), place: input)
                smoothed = smoothed.isNaN ? loss : 0.95 * smoothed + 0.05 * loss
                curve += "\(s),\(loss)\n"
                if s % bar == 0 || s == steps - 1 {
                    FileHandle.standardError.write(
                        Data(String(format: "\rstep %d/%d  loss %.5f", s + 1, steps, smoothed).utf8))
                }
            }
            FileHandle.standardError.write(Data("\n".utf8))
            try d.withInferenceWeights { try WeightsFile.save(d.net, weightsVersion: d.weightsVersion, to: out) }
            if let lossCurve { try curve.write(toFile: lossCurve, atomically: true, encoding: .utf8) }
            print(
                String(
                    format: "trained %d steps on %d plane(s); final smoothed loss %.5f; weights written to %@", steps,
                    usable.count, smoothed, out))
        } catch { throw fail(error) }
    }
}
