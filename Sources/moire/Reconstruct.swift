import ArgumentParser
import Foundation
import MoireCore
import MoirePipeline
import MoireReconstruction
import MoireStorage

/// The SIM options shared by `reconstruct` and `preview`.
struct SIMArguments: ParsableArguments {
    @Option(name: .long, help: "Pattern orientations.") var angles: Int?
    @Option(name: .long, help: "Phases per orientation.") var phases: Int?
    @Option(name: .long, help: "Frame order of a plain stack: angle-major or phase-major.") var order = "angle-major"
    @Option(name: .long, help: "Pixel size in µm (default: from the file).") var pixelUm: Double?
    @Option(name: .long, help: "Detection numerical aperture.") var na: Double?
    @Option(name: .long, help: "Emission wavelength, nm.") var emissionNm: Double?
    @Option(name: .long, help: "Camera background subtracted from every frame (ADU).") var background: Double?
    @Option(name: .long, help: "Measured radial OTF (MRC line); default: the ideal OTF.") var otf: String?
    @Option(name: .long, help: "Attenuation of the ideal OTF (1: none).") var otfAttenuation: Double = 1
    @Option(name: .long, help: "Frequency step per OTF pixel, cycles/µm (when the OTF file does not say).") var otfStep:
        Double?
    @Option(
        name: .long,
        help: "Pattern prior: PERIOD_UM (orientations 180°/angles apart, found), or PERIOD_UM@FIRST_ANGLE_DEG.")
    var kPrior: String?
    @Flag(name: .long, help: "Estimate for every phase set (default: once, from the first).") var estimateEvery = false
    @Option(
        name: .long,
        help: """
            Pattern parameters used as given, without estimation: a JSON file as --params-out writes it (its \
            first set's), e.g. a calibration on beads.
            """)
    var parameters: String?
    @Option(
        name: .long,
        help:
            "Wiener parameter: auto (from each set's or volume's own signal and noise; 2D-SIM, 3D-SIM, LLS-SIM) or a constant w."
    )
    var wiener: WienerParameter?
    @Option(
        name: .long,
        help: "Suppression of bands ±1 near their order centres: auto (where band 0 leaks into them) or 0…1.")
    var suppression: OrderSuppression?

    func job() throws -> OfflineSIM {
        var job = OfflineSIM()
        if let angles { job.angles = angles }
        if let phases { job.phases = phases }
        guard let o = OfflineSIM.FrameOrder(rawValue: order) else {
            throw MoireError(.usage, "--order must be angle-major or phase-major")
        }
        job.order = o
        job.pixelUm = pixelUm; job.na = na; job.emissionNm = emissionNm; job.otfFile = otf.map(absolute)
        job.otfAttenuation = otfAttenuation
        job.otfStep = otfStep
        if let background { job.options.background = background }
        if let wiener { job.options.wiener = wiener }
        if let suppression { job.options.suppression = suppression }
        job.estimateEverySet = estimateEvery
        if let parameters {
            guard kPrior == nil, !estimateEvery else {
                throw MoireError(.usage, "--parameters are used as given: leave out --k-prior and --estimate-every")
            }
            job.prior = .fixed(
                try SIMParameters.load(file: absolute(parameters), angles: job.angles, phases: job.phases))
        }
        if let kPrior {
            let (period, first) = try parseKPrior(kPrior)
            if let first {
                job.prior = .patterns(
                    PatternPrior.regular(periodUm: period, firstAngleDeg: first, angles: job.angles, phases: job.phases)
                )
            } else {
                job.prior = .period(period)
            }
        }
        return job
    }
}

extension WienerParameter: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

extension OrderSuppression: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

/// `--k-prior PERIOD_UM[@FIRST_ANGLE_DEG]`.
func parseKPrior(_ text: String) throws -> (periodUm: Double, firstAngleDeg: Double?) {
    let parts = text.split(separator: "@")
    guard parts.count == 1 || parts.count == 2, let period = Double(parts[0]), period > 0,
        parts.count == 1 || Double(parts[1]) != nil
    else {
        throw MoireError(.usage, "--k-prior must be PERIOD_UM or PERIOD_UM@FIRST_ANGLE_DEG, e.g. 0.1807 or 0.1807@8")
    }
    return (period, parts.count == 2 ? Double(parts[1]) : nil)
}

func printParameters(_ p: SIMParameters) {
    for (a, ap) in p.angles.enumerated() {
        let leak = ap.orderLeak.map { String(format: ", order leak %.1f×", $0.peakLeak) } ?? ""
        print(
            String(
                format:
                    "angle %d: |k| %.4f µm⁻¹ (period %.4f µm), orientation %.2f°, modulation %.3f, confidence %.1f%@, %@%@",
                a, ap.kMagnitude, 1 / ap.kMagnitude, ap.angleDeg, ap.modulation, ap.confidence, leak, ap.source,
                ap.flagged ? " — FLAGGED: \(ap.reason ?? "")" : ""))
    }
}

struct Reconstruct: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Reconstruct 2D-SIM (--sim3d: 3D-SIM volumes; --llsm: light-sheet volumes) from a recording or a plain TIFF/MRC stack into an OME-TIFF."
    )

    @Argument(help: "Recording (.ome.tif) or plain stack (.tif, .mrc).") var input: String
    @Option(name: .long, help: "Output OME-TIFF (float32, 2× grid).") var out: String
    @OptionGroup var output: OutputOptions
    @OptionGroup var sim: SIMArguments
    @Option(name: .long, help: "Write the parameters used and their confidences as JSON.") var paramsOut: String?
    @Option(name: .long, help: "Write a PNG of widefield beside SR (first set).") var preview: String?
    @Option(
        name: .long,
        help: """
            Denoise the SR frames self-supervised: adaptation steps per channel, or auto \
            (\(OfflineSIM.automaticDenoiseSteps)); fewer than \(OfflineSIM.fewestHelpfulDenoiseSteps) leave the SR \
            frame noisier than without.
            """
    ) var denoise: DenoiseSteps?
    @Option(
        name: .long,
        help:
            "SIM denoising method: sr (recorrupted sets reconstructed twice; the better one) or raw (denoise the phase images)."
    )
    var denoiseMethod = "sr"
    @Option(
        name: .long,
        help: "Camera noise for --denoise: OFFSET,GAIN,READ or auto (default: the recording's camera, else auto).")
    var noise: NoiseArgument?
    @Option(
        name: .long,
        help: """
            Reconstruct only part K of N (1 ≤ K ≤ N) of the phase sets (2D-SIM) or volumes (--sim3d, --llsm), into \
            OUT's STEM.part-K-of-N.ome.tif; a complete part already there is kept (batch jobs; moire merge \
            joins the parts).
            """)
    var part: String?
    @OptionGroup(title: "Light sheet (--llsm)") var llsm: LightSheetArguments
    @OptionGroup(title: "3D-SIM (--sim3d)") var sim3d: SIM3DArguments

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            if let part { return try reconstructPart(try BatchPart(parsing: part)) }
            try output.check(outputs: [out, preview], inputs: [input])
            if llsm.llsm { return try reconstructLightSheet() }
            if sim3d.sim3d { return try reconstructSIM3D() }
            var job = try sim.job()
            guard let method = SIMDenoiser.Method(rawValue: denoiseMethod) else {
                throw MoireError(.usage, "--denoise-method takes sr or raw")
            }
            let steps = denoise?.count ?? 0
            if steps > 0, steps < OfflineSIM.fewestHelpfulDenoiseSteps {
                let advice =
                    "warning: \(steps) denoising steps leave the SR frame noisier than the plain reconstruction; "
                    + "use --denoise auto (\(OfflineSIM.automaticDenoiseSteps) steps)\n"
                FileHandle.standardError.write(Data(advice.utf8))
            }
            job.denoiseSteps = steps
            job.denoiseMethod = method
            if let noise { job.noise = noise.model }
            let r = try job.run(
                input: input,
                progress: { done, total in
                    FileHandle.standardError.write(Data("\rreconstructed \(done)/\(total) phase sets".utf8))
                },
                denoiseProgress: { done, total in
                    FileHandle.standardError.write(Data("\rdenoising: adaptation step \(done)/\(total)   ".utf8))
                })
            FileHandle.standardError.write(Data("\n".utf8))
            try OfflineSIM.write(
                r, to: out,
                name: (r.denoised != nil ? "denoised SR of " : "SR of ") + (input as NSString).lastPathComponent)
            printParameters(r.parameters[0])
            print("wrote \(r.sr.count) SR frame(s) of \(2 * r.width)×\(2 * r.height) to \(out)")
            if let paramsOut {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                try enc.encode(r.parameters).write(to: URL(fileURLWithPath: paramsOut))
            }
            if let preview { try OfflineSIM.preview(r).write(to: URL(fileURLWithPath: preview)) }
        } catch { throw fail(error) }
    }
}

extension Reconstruct {
    /// One part of a batch reconstruction (2D-SIM, 3D-SIM or light sheet): written under a temporary name and moved into
    /// place when complete; an existing complete part is kept, so a rerun task does nothing.
    func reconstructPart(_ part: BatchPart) throws {
        guard preview == nil, paramsOut == nil else {
            throw MoireError(.usage, "--preview and --params-out describe a whole run; leave them out of a part")
        }
        let path = part.path(for: absolute(out))
        try output.check(outputs: [], inputs: [input])
        if BatchPart.isComplete(path) && !output.overwrite {
            print("part \(part) is already complete: \(path)")
            return
        }
        let inputName = (input as NSString).lastPathComponent
        let written: String
        let write: (String) throws -> Void
        if llsm.llsm {
            var job = try lightSheetJob()
            job.part = part
            let isLLSSIM = (try? RecordingFormat.openReader(path: input))?.layout?.mode == "llssim"
            let r = isLLSSIM ? try job.runSIM(input: input, sim: try sim.job()) : try job.run(input: input)
            written = "\(r.deconvolved.count) volume(s)"
            write = { try OfflineLightSheet.write(r, to: $0, name: "deskewed, deconvolved \(inputName)") }
        } else if sim3d.sim3d {
            var job = try sim3dJob()
            job.part = part
            let r = try job.run(input: input)
            written = "\(r.sr.count) volume(s)"
            write = { try OfflineSIM3D.write(r, to: $0, name: "3D-SIM of \(inputName)") }
        } else {
            var job = try sim.job()
            job.part = part
            let r = try job.run(input: input)
            let sets = r.sets.first.map { "\($0 + 1)…\(r.sets.last! + 1)" } ?? "-"
            written = "\(r.sr.count) SR frame(s) (phase sets \(sets))"
            write = { try OfflineSIM.write(r, to: $0, name: "SR of \(inputName)") }
        }
        try BatchPart.writeAtomically(to: path, write)
        print("part \(part): wrote \(written) to \(path)")
    }

    /// Deskew and deconvolution of sample-scan light-sheet stacks into volumes.
    func reconstructLightSheet() throws {
        try runLightSheet(try lightSheetJob())
    }

    /// The light-sheet job the options describe.
    func lightSheetJob() throws -> OfflineLightSheet {
        var job = try OfflineLightSheet()
        job.angleDeg = llsm.angle; job.stepUm = llsm.stepUm; job.pixelUm = sim.pixelUm;
        job.planesPerVolume = llsm.planesPerVolume
        job.iterations = llsm.iterations; job.psfFile = llsm.psf.map(absolute); job.background = llsm.volumeBackground
        job.rotate = llsm.rotate
        job.optics = try LightSheetOptics(
            na: sim.na ?? 1.1, immersionIndex: llsm.immersionIndex ?? 1.33, emissionNm: sim.emissionNm ?? 520,
            sheetThicknessUm: llsm.sheetUm)
        return job
    }

    /// Runs `job` on the input (LLS-SIM recordings through the SIM job) and writes and reports its volumes.
    func runLightSheet(_ job: OfflineLightSheet) throws {
        let isLLSSIM = (try? RecordingFormat.openReader(path: input))?.layout?.mode == "llssim"
        let r =
            isLLSSIM
            ? try job.runSIM(input: input, sim: try sim.job())
            : try job.run(input: input) { what, i, n in
                FileHandle.standardError.write(Data("\r\(what): deconvolution iteration \(i)/\(n)   ".utf8))
            }
        FileHandle.standardError.write(Data("\n".utf8))
        try OfflineLightSheet.write(r, to: out, name: "deskewed, deconvolved \((input as NSString).lastPathComponent)")
        let v = r.deconvolved[0]
        print(
            String(
                format: "wrote %d volume(s) of %d×%d×%d voxels (%.4f × %.4f × %.4f µm) to %@", r.deconvolved.count,
                v.width, v.height, v.depth,
                v.voxelUm.x, v.voxelUm.y, v.voxelUm.z, out))
        if let preview { try OfflineLightSheet.preview(r).write(to: URL(fileURLWithPath: preview)) }
    }
}

/// Geometry of 3D-SIM stacks.
struct SIM3DArguments: ParsableArguments {
    @Flag(
        name: .long,
        help: "The input is 3D-SIM (three-beam, ≥ 5 phases): phase-stepped z-stacks reconstructed into volumes.")
    var sim3d = false
    @Option(name: .long, help: "Planes per z-stack of a plain stack.") var zPlanes: Int?
    @Option(name: .long, help: "Distance between planes, µm (default: the recording's z step).") var zStepUm: Double?
    @Option(name: .long, help: "Plane order of a plain stack: z-angle-phase or angle-z-phase (phase fastest).")
    var stackOrder = "z-angle-phase"
    @Option(name: .long, help: "Excitation wavelength, nm (the pattern's axial frequency follows from it).")
    var excitationNm = 488.0
}

extension Reconstruct {
    /// 3D-SIM volumes from phase-stepped z-stacks.
    func reconstructSIM3D() throws {
        let job = try sim3dJob()
        let r = try job.run(input: input) { done, total in
            FileHandle.standardError.write(Data("\rreconstructed \(done)/\(total) volumes".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        try OfflineSIM3D.write(r, to: out, name: "3D-SIM of \((input as NSString).lastPathComponent)")
        try report3D(r)
    }

    /// The 3D-SIM job the options describe.
    func sim3dJob() throws -> OfflineSIM3D {
        var job = OfflineSIM3D()
        job.angles = sim.angles ?? 3; job.phases = sim.phases ?? 5
        job.zPlanes = sim3d.zPlanes; job.zStepUm = sim3d.zStepUm; job.pixelUm = sim.pixelUm
        guard let order = OfflineSIM3D.StackOrder(rawValue: sim3d.stackOrder) else {
            throw MoireError(.usage, "--stack-order must be z-angle-phase or angle-z-phase")
        }
        job.order = order
        job.na = sim.na; job.emissionNm = sim.emissionNm; job.excitationNm = sim3d.excitationNm
        job.immersionIndex = llsm.immersionIndex
        job.background = sim.background; job.wiener = sim.wiener
        if let kPrior = sim.kPrior { (job.periodUm, job.firstAngleDeg) = try parseKPrior(kPrior) }
        return job
    }

    /// Prints the parameters a 3D-SIM run used and what it wrote; writes --params-out and --preview.
    func report3D(_ r: OfflineSIM3D.Result) throws {
        for (a, (e, d)) in zip(r.estimate.angles, r.estimate.projected.angles).enumerated() {
            print(
                String(
                    format:
                        "angle %d: |k| %.4f µm⁻¹ (period %.4f µm), orientation %.2f°, kz %.4f µm⁻¹, m1 %.3f, m2 %.3f, confidence %.1f, %@%@",
                    a, hypot(e.kx, e.ky), 1 / hypot(e.kx, e.ky), d.angleDeg, e.kz, e.m1, e.m2, d.confidence, d.source,
                    d.flagged ? " — FLAGGED: \(d.reason ?? "")" : ""))
        }
        let v = r.sr[0]
        print(
            String(
                format: "wrote %d volume(s) of %d×%d×%d voxels (%.4f × %.4f × %.4f µm) to %@", r.sr.count, v.width,
                v.height, v.depth,
                v.voxelUm.x, v.voxelUm.y, v.voxelUm.z, out))
        if let paramsOut {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(r.estimate.angles).write(to: URL(fileURLWithPath: paramsOut))
        }
        if let preview { try OfflineSIM3D.preview(r).write(to: URL(fileURLWithPath: preview)) }
    }
}

/// Geometry and deconvolution options of light-sheet stacks.
struct LightSheetArguments: ParsableArguments {
    @Flag(name: .long, help: "The input is a sample-scan light-sheet stack: deskew and deconvolve it into volumes.")
    var llsm = false
    @Option(name: .long, help: "Sheet angle to the scan direction, degrees (e.g. 31.5).") var angle: Double?
    @Option(name: .long, help: "Scan step between planes, µm (default: the recording's z step).") var stepUm: Double?
    @Option(name: .long, help: "Planes per volume of a plain stack (default: all).") var planesPerVolume: Int?
    @Option(name: .long, help: "Richardson-Lucy iterations (0: deskew only).") var iterations = 10
    @Option(
        name: .long,
        help:
            "Measured PSF (TIFF/MRC, odd sides, deskewed frame); default: the Gaussian model (--na, --emission-nm, --sheet-um)."
    )
    var psf: String?
    @Option(name: .long, help: "Light-sheet thickness (FWHM), µm, for the PSF model.") var sheetUm = 1.0
    @Option(name: .long, help: "Immersion index for the PSF model (default: 1.33 with --llsm, 1.518 with --sim3d).")
    var immersionIndex: Double?
    @Option(name: .long, help: "Background subtracted before deconvolution (default: the volume's 1st percentile).")
    var volumeBackground: Float?
    @Flag(name: .long, help: "Rotate the volumes into the coverslip frame (isotropic voxels of the pixel size).")
    var rotate = false
}

struct Preview: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write a PNG of widefield beside SR for one phase set of a recording or file, to look rather than read.")

    @Argument(help: "Recording (.ome.tif) or plain stack (.tif, .mrc).") var input: String
    @Option(name: .long, help: "PNG to write.") var out: String
    @OptionGroup var output: OutputOptions
    @Option(name: .long, help: "Which phase set (0-based).") var set: Int = 0
    @OptionGroup var sim: SIMArguments

    func run() throws {
        bootstrapLogging(verbose: false)
        do {
            try output.check(outputs: [out], inputs: [input])
            let r = try sim.job().run(input: input)
            guard set >= 0, set < r.sr.count else {
                throw MoireError(.usage, "--set \(set) does not exist; the input has \(r.sr.count) phase set(s)")
            }
            try OfflineSIM.preview(r, index: set).write(to: URL(fileURLWithPath: out))
            printParameters(r.parameters[set])
            print("wrote \(out): widefield (left) and SR (right), \(4 * r.width + 4)×\(2 * r.height)")
        } catch { throw fail(error) }
    }
}

/// `--denoise`: the adaptation steps per channel, or `auto`.
struct DenoiseSteps: ExpressibleByArgument {
    let count: Int

    init?(argument: String) {
        if argument == "auto" {
            count = OfflineSIM.automaticDenoiseSteps
            return
        }
        guard let steps = Int(argument), steps >= 0 else { return nil }
        count = steps
    }
}
