import ArgumentParser
import Foundation
import MoireCore
import MoireDenoise
import MoirePipeline
import MoireStorage

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Train the denoiser on a recording or TIFF/MRC stack and save its weights: self-supervised, or against noise-free images (--targets)."
    )

    @Argument(
        help:
            "Recordings (.ome.tif) or plain stacks (.tif, .mrc); with several, training visits each in turn, planes in order."
    )
    var inputs: [String]
    @Option(name: .long, help: "Weights file to write.") var out: String
    @OptionGroup var output: OutputOptions
    @Option(name: .long, help: "Training steps.") var steps = 500
    @Option(name: .long, help: "Steps on each plane before the next (planes are visited in order).") var stepsPerPlane =
        1
    @Option(name: .long, help: "Crop size (multiple of 4).") var crop = 128
    @Option(name: .long, help: "Crops per step.") var batch = 1
    @Option(name: .long, help: "Starting learning rate (the shipped model's recipe spiked at 3e-3).") var lr: Float =
        1e-3
    @Option(name: .long, help: "Factor the learning rate decays by over the run (exponentially).") var decay: Float =
        0.05
    @Option(name: .long, help: "Weight averaging of the saved weights (EMA decay; 0: the last weights).") var averaging:
        Float = 0.99
    @Option(name: .long, help: "Starting weights: shipped, scratch or a weights file (default: scratch).")
    var weights: StartingWeights?
    @Option(
        name: .long,
        help: "Camera noise: OFFSET,GAIN,READ or auto (default: each recording's camera, else estimated per input).")
    var noise: NoiseArgument?
    @Option(name: .long, help: "Write the loss curve (step, loss) as CSV.") var lossCurve: String?
    @Option(name: .long, help: "Seed.") var seed: UInt64 = 1
    @OptionGroup var training: TrainingPairArguments
    @Option(
        name: .long, parsing: .upToNextOption,
        help:
            "Noise-free images of the same scenes (simulated data), one per input with the same planes: supervised training on (plane, noise-free plane) instead of self-supervised pairs."
    )
    var targets: [String] = []

    /// One input's usable planes and what normalises them.
    struct TrainingStack {
        var path: String
        var planes: [[Float]]
        var width: Int
        var height: Int
        var pixelUm: Double?
        var model: NoiseModel
        /// The noise-free planes, one per plane (supervised training), or nil.
        var clean: [[Float]]?
    }

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            try output.check(outputs: [out, lossCurve], inputs: inputs + targets)
            guard crop % 4 == 0, crop >= 16, steps > 0, stepsPerPlane > 0 else {
                throw MoireError(
                    .usage, "--crop must be a multiple of 4 of at least 16; --steps and --steps-per-plane > 0")
            }
            var job = OfflineDenoise()
            if let noise { job.noise = noise.model.map { .fixed($0) } ?? .auto }
            try training.apply(to: &job)
            if !targets.isEmpty {
                guard targets.count == inputs.count else {
                    throw MoireError(
                        .usage, "--targets gives \(targets.count) file(s) for \(inputs.count) input(s); one per input")
                }
                guard job.pairs == .recorrupt, !job.deconvolve else {
                    throw MoireError(.usage, "--targets trains against noise-free images: no --pairs, no --deconvolve")
                }
            }
            let stacks = try inputs.indices.map { k in
                try loadStack(inputs[k], clean: targets.isEmpty ? nil : targets[k], job: job)
            }
            let smallest = stacks.map { min($0.width, $0.height) }.min()!
            let first = stacks[0]
            job.start = weights?.start ?? .scratch
            try job.validate()
            let d = Denoiser(engine: try DNNLEngine(), model: first.model, input: job.resolvedInput, seed: seed)
            d.crop = min(crop, smallest / (job.pairs == .neighbour ? 8 : 4) * 4)
            d.batch = batch
            d.learningRate = lr
            d.decay = (decay, steps)
            d.averaging = averaging
            try job.loadStart(into: d.net)
            if job.deconvolve { d.deconvolution = try job.deconvolutionLoss(input: first.path, pixelUm: first.pixelUm) }
            var curve = "step,loss\n"
            var smoothed = Double.nan
            let bar = max(1, steps / 50)
            // Visit the inputs in turn, each plane in order with `stepsPerPlane` steps, so temporal
            // context always holds the previous plane of the same input.
            var step = 0
            var visit = 0
            while step < steps {
                let stack = stacks[visit % stacks.count]
                visit += 1
                d.model = stack.model
                d.scale = nil
                d.resetContext()
                for (i, plane) in stack.planes.enumerated() where step < steps {
                    let partner =
                        stack.planes.count > 1
                        ? stack.planes[OfflineDenoise.partner(of: i, count: stack.planes.count)] : nil
                    for _ in 0..<stepsPerPlane where step < steps {
                        let loss =
                            try stack.clean.map {
                                try d.adapt(plane, clean: $0[i], width: stack.width, height: stack.height)
                            }
                            ?? job.adaptStep(
                                d, plane: plane, partner: partner, width: stack.width, height: stack.height,
                                seed: seed &+ UInt64(step), place: stack.path)
                        smoothed = smoothed.isNaN ? loss : 0.95 * smoothed + 0.05 * loss
                        curve += "\(step),\(loss)\n"
                        if step % bar == 0 || step == steps - 1 {
                            FileHandle.standardError.write(
                                Data(String(format: "\rstep %d/%d  loss %.5f", step + 1, steps, smoothed).utf8))
                        }
                        step += 1
                    }
                    d.observe(plane, width: stack.width, height: stack.height)
                }
            }
            FileHandle.standardError.write(Data("\n".utf8))
            try d.withInferenceWeights { try WeightsFile.save(d.net, weightsVersion: d.weightsVersion, to: out) }
            if let lossCurve { try curve.write(toFile: lossCurve, atomically: true, encoding: .utf8) }
            print(
                String(
                    format:
                        "trained %d steps on %d plane(s) of %d input(s); final smoothed loss %.5f; weights written to %@",
                    steps, stacks.map(\.planes.count).reduce(0, +), stacks.count, smoothed, out))
        } catch { throw fail(error) }
    }

    /// Loads one input: its usable (finite, non-blank) planes, cropped to sides divisible by 4 (what
    /// the network's inference needs for temporal context), and its noise model; with `clean`, the
    /// noise-free planes that go with them (same size and number of planes, finite).
    func loadStack(_ path: String, clean cleanPath: String?, job: OfflineDenoise) throws -> TrainingStack {
        let stack = try ImageImport.load(path)
        guard !stack.planes.isEmpty, min(stack.width, stack.height) >= 16 else {
            throw MoireError(.usage, "the planes must be at least 16×16", place: path)
        }
        let model = try job.noiseModel(input: path, frames: stack.planes, width: stack.width, height: stack.height)
        let usable = stack.planes.indices.filter { k in
            let p = stack.planes[k]
            return allFinite(p) && (p.max() ?? 0) > (p.min() ?? 0)
        }
        guard !usable.isEmpty else {
            throw MoireError(.numeric, "no usable (finite, non-blank) plane to train on", place: path)
        }
        let width = stack.width / 4 * 4
        let height = stack.height / 4 * 4
        func cropped(_ plane: [Float]) -> [Float] {
            (0..<(width * height)).map { plane[($0 / width) * stack.width + $0 % width] }
        }
        var clean: [[Float]]?
        if let cleanPath {
            let truth = try ImageImport.load(cleanPath)
            guard truth.width == stack.width, truth.height == stack.height, truth.planes.count == stack.planes.count
            else {
                throw MoireError(
                    .usage,
                    "the noise-free target is \(truth.width)×\(truth.height)×\(truth.planes.count); its input \(path) is \(stack.width)×\(stack.height)×\(stack.planes.count)",
                    place: cleanPath)
            }
            guard usable.allSatisfy({ allFinite(truth.planes[$0]) }) else {
                throw MoireError(.numeric, "the noise-free target holds NaN or infinite values", place: cleanPath)
            }
            clean = usable.map { cropped(truth.planes[$0]) }
        }
        return TrainingStack(
            path: path, planes: usable.map { cropped(stack.planes[$0]) }, width: width, height: height,
            pixelUm: stack.pixelSizeUm, model: model, clean: clean)
    }
}
