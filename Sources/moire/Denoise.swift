import ArgumentParser
import Foundation
import MoireCore
import MoireDenoise
import MoirePipeline

struct Denoise: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Denoise a recording or a TIFF/MRC stack with a self-supervised network adapted to each frame.")

    @Argument(help: "Recording (.ome.tif) or plain stack (.tif, .mrc).") var input: String
    @Option(name: .long, help: "Output OME-TIFF (float32).") var out: String
    @OptionGroup var output: OutputOptions
    @Option(
        name: .long,
        help:
            "Starting weights: shipped (the models trained on simulated time-lapses, with and without temporal context), scratch, or a weights file (default: shipped, scratch with --deconvolve)."
    )
    var weights: StartingWeights?
    @Option(name: .long, help: "Save the adapted weights here.") var saveWeights: String?
    @Option(name: .long, help: "Adaptation steps per frame.") var adaptSteps = 5
    @Option(
        name: .long,
        help:
            "Adaptation steps on the first frame, then --adapt-steps on each (default: a warm-up of 200, 100, 66, … steps from the shipped model, 50 per frame for runs of fewer than four; 300, 150, … from scratch)."
    )
    var firstSteps: Int?
    @Option(
        name: .long,
        help:
            "Camera noise: OFFSET,GAIN,READ (ADU, ADU/e⁻, e⁻ r.m.s.) or auto; default: the recording's camera profile, else auto."
    )
    var noise: NoiseArgument?
    @Option(name: .long, help: "Training crop size (pixels; clamped to the frame).") var crop = 128
    @Option(name: .long, help: "Crops per adaptation step.") var batch = 1
    @Option(name: .long, help: "Weight averaging for inference (EMA decay; 0: off).") var averaging: Float = 0.99
    @Flag(
        inversion: .prefixedNo,
        help:
            "Average each frame's output over its eight rotations and mirror images (8× inference; default: for a single plane only)."
    )
    var selfEnsemble: Bool?
    @OptionGroup var training: TrainingPairArguments
    @Option(name: .long, help: "Learning rate (default: 5e-4 from the shipped model, else 1e-3).") var lr: Float?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Denoise only part K of N (1 ≤ K ≤ N) of the frames, into OUT's STEM.part-K-of-N.ome.tif, after a warm-up on the frames before it; a complete part already there is kept (batch jobs; moire merge joins the parts).",
            valueName: "K/N"))
    var part: String?
    @Option(name: .long, help: "Frames before a part's slice that it adapts on first (not written).")
    var partWarmUp = 16

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            let batchPart = try part.map(BatchPart.init(parsing:))
            let destination = batchPart.map { $0.path(for: absolute(out)) } ?? out
            if let batchPart {
                try output.check(outputs: [saveWeights], inputs: [input])
                if BatchPart.isComplete(destination) && !output.overwrite {
                    print("part \(batchPart) is already complete: \(destination)")
                    return
                }
            } else {
                try output.check(outputs: [out, saveWeights], inputs: [input])
            }
            var job = OfflineDenoise()
            job.start = weights?.start; job.saveWeights = saveWeights
            job.adaptSteps = adaptSteps; job.firstSteps = firstSteps; job.crop = crop; job.batch = batch;
            job.learningRate = lr; job.averaging = averaging
            job.selfEnsemble = selfEnsemble
            try training.apply(to: &job)
            if let noise { job.noise = noise.model.map { .fixed($0) } ?? .auto }
            job.part = batchPart
            job.partWarmUpFrames = partWarmUp
            let r = try job.run(input: input) { done, total in
                FileHandle.standardError.write(Data("\rdenoised \(done)/\(total) frames".utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let name = "denoised \((input as NSString).lastPathComponent)"
            if batchPart != nil {
                try BatchPart.writeAtomically(to: destination) { try OfflineDenoise.write(r, to: $0, name: name) }
            } else {
                try OfflineDenoise.write(r, to: out, name: name)
            }
            print("noise model: \(r.model.summary)")
            print("network: \(r.network == .frame ? "single-frame" : "with temporal context")")
            print(
                "wrote \(r.frames.count) denoised frame(s) to \(destination)\(r.skipped > 0 ? " (\(r.skipped) blank or non-finite frames passed through unchanged)" : "")"
            )
        } catch { throw fail(error) }
    }
}

/// `--noise OFFSET,GAIN,READ` (ADU, ADU/e⁻, e⁻ r.m.s.; e.g. 100,0.46,1.4), or `auto`: estimated
/// from the images.
enum NoiseArgument: ExpressibleByArgument {
    case auto
    case fixed(NoiseModel)

    init?(argument: String) {
        if argument == "auto" {
            self = .auto
            return
        }
        let values = argument.split(separator: ",", omittingEmptySubsequences: false).map { Double($0) }
        guard values.count == 3, let offset = values[0], let gain = values[1], let read = values[2],
            offset.isFinite, gain.isFinite, read.isFinite, gain > 0, read >= 0
        else { return nil }
        self = .fixed(NoiseModel(offset: offset, gain: gain, readVariance: pow(read * gain, 2)))
    }

    static var defaultCompletionKind: CompletionKind { .list(["auto"]) }

    /// The model given; nil for `auto`.
    var model: NoiseModel? {
        switch self {
        case .auto: return nil
        case .fixed(let model): return model
        }
    }
}

/// Training pairs and the deconvolution term, shared by `denoise` and `train`.
struct TrainingPairArguments: ParsableArguments {
    @Option(
        name: .long,
        help:
            "Training pairs: recorrupt (camera noise model), odd-even (neighbouring planes or frames), neighbour (Neighbor2Neighbor sub-sampling)."
    )
    var pairs = "recorrupt"
    @Flag(name: .long, help: "Deconvolve too (ZS-DeconvNet term: output ⊛ PSF fits the data, Hessian regularisation).")
    var deconvolve = false
    @Option(
        name: .long,
        help: "PSF for --deconvolve: Gaussian σ in pixels (default: the widefield model from the recording's optics).")
    var psfSigma: Double?
    @Option(name: .long, help: "Hessian regularisation weight for --deconvolve.") var hessian: Float = 0.0005
    @Option(
        name: .long,
        help:
            "Temporal context: history (the network also sees a motion-adaptive average of the earlier frames) or none (default: history with recorrupted pairs, else none; a single plane to denoise gets none)."
    )
    var context: ContextArgument?

    func apply(to job: inout OfflineDenoise) throws {
        guard let p = OfflineDenoise.Pairs(rawValue: pairs) else {
            throw MoireError(
                .usage,
                "--pairs must be one of \(OfflineDenoise.Pairs.allCases.map(\.rawValue).joined(separator: ", ")); got \(pairs)"
            )
        }
        guard psfSigma.map({ $0 > 0 }) ?? true, hessian >= 0 else {
            throw MoireError(.usage, "--psf-sigma must be > 0 and --hessian ≥ 0")
        }
        job.pairs = p; job.deconvolve = deconvolve; job.psfSigmaPx = psfSigma; job.hessianWeight = hessian
        job.input = context?.input
        try job.validate()
    }
}

/// `--context history|none`.
enum ContextArgument: String, ExpressibleByArgument, CaseIterable {
    case history
    case none

    var input: UNet.Input { self == .history ? .frameAndHistory : .frame }
}

/// `--weights shipped|scratch|PATH`.
struct StartingWeights: ExpressibleByArgument {
    let start: OfflineDenoise.Start

    init?(argument: String) {
        switch argument {
        case "shipped": start = .shipped
        case "scratch": start = .scratch
        default: start = .file(absolute(argument))
        }
    }
}
