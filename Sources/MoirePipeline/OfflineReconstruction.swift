import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireDenoise
import MoireReconstruction
import MoireStorage

/// Offline 2D-SIM of a recording or a plain TIFF/MRC stack (`moire reconstruct`).
public struct OfflineSIM {
    /// How raw frames are ordered in a plain stack.
    public enum FrameOrder: String, Sendable, CaseIterable {
        case angleMajor = "angle-major", phaseMajor = "phase-major"
    }

    /// The prior for parameter estimation.
    public enum Prior: Sendable {
        case none
        case patterns([PatternPrior])
        case period(Double)
        /// Parameters used as given, without estimation.
        case fixed(SIMParameters)
    }

    public var angles = 3
    public var phases = 3
    public var order = FrameOrder.angleMajor
    public var pixelUm: Double?
    public var na: Double?
    public var emissionNm: Double?
    public var otfFile: String?
    public var otfAttenuation = 1.0
    /// Frequency step per OTF sample (cycles/µm) when the OTF file does not state it.
    public var otfStep: Double?
    public var prior = Prior.none
    public var options = SIM2DOptions()
    /// Estimate once from the first phase set (default) or for every set.
    public var estimateEverySet = false
    /// Self-supervised SIM denoising (`SIMDenoiser`): adaptation steps per channel (0: off), the method,
    /// and the camera noise model (default: the recording's camera, else estimated from the first frame).
    public var denoiseSteps = 0
    /// The adaptation steps per channel of `--denoise auto`. Measured on the fidelity harness at
    /// 100 photons (docs/reconstruction.md): 30 steps leave the SR frame 0.8–1.8 dB below the
    /// plain reconstruction; 300 steps put it 3–9 dB above.
    public static let automaticDenoiseSteps = 300
    /// Fewer steps than this leave the denoised SR frame noisier than the plain reconstruction.
    public static let fewestHelpfulDenoiseSteps = 100
    public var denoiseMethod = SIMDenoiser.Method.srPairs
    public var noise: NoiseModel?
    /// Reconstruct only this part of the phase sets (batch reprocessing); parameters are still
    /// estimated where a whole run would estimate them (each channel's first complete set), so
    /// the parts together equal the whole.
    public var part: BatchPart?
    /// Phase sets that a part never splits (1; the planes of one volume for LLS-SIM): a part
    /// takes whole runs of this many sets.
    public var setsPerPartUnit = 1
    /// Per-channel emission and prior, from a recording (sets cycle through channels, then z).
    var channelEmission: [Double] = []
    var channelPriors: [Prior] = []
    var zPlanes = 1

    public init() {}

    /// What a reconstruction produced.
    public struct Result: Sendable {
        public var sr: [[Float]]
        public var widefield: [[Float]]
        public var parameters: [SIMParameters]
        /// The phase set (0-based, in the input) each SR frame was made from.
        public var sets: [Int] = []
        public var width: Int
        public var height: Int
        public var pixelUm: Double
        /// The SIM denoising method applied to `sr`, if any.
        public var denoised: SIMDenoiser.Method?
    }

    /// Reads the input, fills options from a Moiré recording's metadata, and reconstructs every phase set.
    public func run(
        input: String, logger: Logger = Logger(label: "moire.reconstruct"), progress: (Int, Int) -> Void = { _, _ in },
        denoiseProgress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Result {
        var cfg = self
        var planes: [[Float]]
        var w = 0
        var h = 0
        if input.lowercased().hasSuffix(".mrc") {
            let s = try ImageImport.loadMRC(input)
            guard !s.isComplex else {
                throw MoireError(.format, "complex MRC data is not a raw SIM stack", place: input)
            }
            planes = s.planes; w = s.width; h = s.height
            if cfg.pixelUm == nil { cfg.pixelUm = s.pixelSizeUm }
        } else {
            let r = try RecordingFormat.openReader(path: input)
            w = r.width; h = r.height
            if let layout = r.layout {
                try cfg.adopt(layout, logger: logger)
                let recs = r.planeRecords() ?? []
                if let bad = recs.first(where: { $0.header.missing && $0.acquired }) {
                    logger.warning(
                        "recording has missing frames; their phase sets are skipped",
                        metadata: ["first": "\(bad.header.index)"])
                }
                // Every plane must sit where its header says (angle-major within each set).
                for (i, rec) in recs.enumerated() where rec.acquired {
                    let inSet = i % (layout.angles * layout.phases)
                    let angle = inSet / layout.phases
                    let phase = inSet % layout.phases
                    if rec.header.angle != angle || rec.header.phase != phase {
                        throw MoireError(
                            .format,
                            "plane \(i) is angle \(rec.header.angle), phase \(rec.header.phase) by its header, but its position says angle \(angle), phase \(phase): the frame order is inconsistent",
                            place: input)
                    }
                }
            }
            planes = try (0..<r.planeCount).map { try r.readPlaneFloat($0) }
        }
        guard let pixel = cfg.pixelUm, pixel > 0 else {
            throw MoireError(.usage, "the pixel size is unknown; give --pixel-um", place: input)
        }
        guard let na = cfg.na else {
            throw MoireError(.usage, "the numerical aperture is unknown; give --na", place: input)
        }
        guard let em = cfg.emissionNm else {
            throw MoireError(.usage, "the emission wavelength is unknown; give --emission-nm", place: input)
        }
        let per = cfg.angles * cfg.phases
        if cfg.part != nil, cfg.denoiseSteps > 0 {
            throw MoireError(
                .usage, "--part cannot be combined with --denoise: SIM denoising adapts on every set of the run",
                place: input)
        }
        guard planes.count >= per, planes.count % per == 0 else {
            throw MoireError(
                .usage, "\(planes.count) frames is not a whole number of \(cfg.angles) × \(cfg.phases) phase sets",
                place: input)
        }
        let otf: RadialOTF
        if let f = cfg.otfFile {
            let m = try MeasuredRadialOTF.load(f, step: cfg.otfStep)
            let nyquist = 1 / (2 * pixel)
            guard m.cutoff > 0.2 * nyquist, m.cutoff < 4 * nyquist else {
                throw MoireError(
                    .usage,
                    String(
                        format:
                            "the OTF's cutoff %.2f µm⁻¹ does not fit images of %.4f µm pixels (Nyquist %.2f µm⁻¹): wrong OTF or wrong pixel size?",
                        m.cutoff, pixel, nyquist), place: f)
            }
            otf = m
        } else {
            otf = IdealOTF(na: na, emissionNm: em, attenuation: cfg.otfAttenuation)
        }
        let channels = max(1, cfg.channelEmission.count)
        var recs: [Int: SIM2DReconstructor] = [:]
        func reconstructor(_ c: Int) throws -> SIM2DReconstructor {
            if let r = recs[c] { return r }
            var o: RadialOTF = otf
            if cfg.otfFile == nil, c < cfg.channelEmission.count {
                o = IdealOTF(na: na, emissionNm: cfg.channelEmission[c], attenuation: cfg.otfAttenuation)
            }
            let r = try SIM2DReconstructor(
                width: w, height: h, pixelUm: pixel, angles: cfg.angles, phases: cfg.phases, otf: o,
                options: cfg.options)
            recs[c] = r
            return r
        }
        var result = Result(sr: [], widefield: [], parameters: [], width: w, height: h, pixelUm: pixel)
        var paramsByChannel: [Int: SIMParameters] = [:]
        var kept: [(channel: Int, frames: [[Float]])] = []
        let sets = planes.count / per
        let unit = max(1, cfg.setsPerPartUnit)
        if let part = cfg.part, part.count > sets / unit {
            let what = unit == 1 ? "phase sets" : "volumes"
            throw MoireError(
                .usage, "\(part.count) parts of \(sets / unit) \(what): at most one part per \(what.dropLast())",
                place: input)
        }
        let mine =
            cfg.part.map { part in
                let units = part.range(of: sets / unit)
                return (units.lowerBound * unit)..<(units.upperBound * unit)
            } ?? 0..<sets
        for s in 0..<sets {
            let c = (s / max(1, cfg.zPlanes)) % channels
            // Another part's set matters only as where this channel's parameters are estimated.
            if !mine.contains(s), paramsByChannel[c] != nil || cfg.estimateEverySet { continue }
            let rec = try reconstructor(c)
            var params = paramsByChannel[c]
            let prior = c < cfg.channelPriors.count ? cfg.channelPriors[c] : cfg.prior
            var frames = Array(planes[(s * per)..<((s + 1) * per)])
            if cfg.order == .phaseMajor {
                frames = (0..<per).map { i in frames[(i % cfg.phases) * cfg.angles + i / cfg.phases] }
            }
            if frames.contains(where: { f in f.allSatisfy { $0 == 0 } }) {
                logger.warning("phase set has a blank (missing) frame; skipped", metadata: ["set": "\(s)"])
                continue
            }
            if params == nil || cfg.estimateEverySet {
                switch prior {
                case .fixed(let p): params = p
                case .patterns(let p): params = try rec.estimate(frames, priors: p)
                case .period(let p): params = try rec.estimate(frames, periodUm: p)
                case .none: params = try rec.estimate(frames, priors: nil)
                }
                for (a, ap) in params!.angles.enumerated() where ap.flagged {
                    logger.warning(
                        "estimate not trusted; prior used", metadata: ["angle": "\(a)", "reason": "\(ap.reason ?? "")"])
                }
            }
            paramsByChannel[c] = params
            // Sets of other parts: only where this channel's parameters come from.
            guard mine.contains(s) else { continue }
            result.sr.append(try rec.reconstruct(frames, parameters: params!))
            result.widefield.append(try rec.widefield(frames))
            result.parameters.append(params!)
            result.sets.append(s)
            kept.append((c, frames))
            progress(s + 1 - mine.lowerBound, mine.count)
        }
        guard !result.sr.isEmpty else {
            throw MoireError(.numeric, "no complete phase set to reconstruct", place: input)
        }
        if cfg.denoiseSteps > 0 {
            let model =
                try cfg.noise ?? OfflineDenoise.cameraModel(input) ?? Self.estimateNoise(kept, width: w, height: h)
            let engine = try DNNLEngine()
            for c in Set(kept.map(\.channel)).sorted() {
                let idx = kept.indices.filter { kept[$0].channel == c }
                let sd = SIMDenoiser(
                    engine: engine, reconstructor: try reconstructor(c), parameters: result.parameters[idx[0]],
                    model: model, method: cfg.denoiseMethod, seed: 1)
                let d = sd.denoiser
                d.crop = min(128, (min(w, h) / 4) * 4); d.batch = 1; d.learningRate = 3e-3
                d.decay = (0.05, cfg.denoiseSteps); d.averaging = 0.99
                for step in 0..<cfg.denoiseSteps {
                    let i = idx[step % idx.count]
                    sd.parameters = result.parameters[i]
                    try sd.adapt(set: kept[i].frames)
                    if step % max(1, cfg.denoiseSteps / 50) == 0 { denoiseProgress(step + 1, cfg.denoiseSteps) }
                }
                for i in idx {
                    sd.parameters = result.parameters[i]
                    result.sr[i] = try sd.reconstruct(set: kept[i].frames)
                }
            }
            result.denoised = cfg.denoiseMethod
        }
        return result
    }

    /// Takes angles, phases, pixel size, NA, emission, background and the pattern prior from a recording.
    mutating func adopt(_ l: RecordingLayout, logger: Logger) throws {
        angles = l.angles; phases = l.phases
        if pixelUm == nil { pixelUm = l.pixelSizeUm }
        if na == nil { na = l.objectiveNA }
        if emissionNm == nil { channelEmission = l.emissionNm; emissionNm = l.emissionNm.first }
        zPlanes = l.zPlanes
        if case .none = prior, FileManager.default.fileExists(atPath: l.protocolFile),
            let proto = try? AcquisitionProtocol.load(file: l.protocolFile)
        {
            channelPriors = proto.channels.map { ch in
                guard let name = ch.patternSet,
                    let set = proto.rig.modulator?.profile.modulator?.patternSet(named: name)
                else { return .none }
                return .patterns(PatternPrior.from(set, angles: angles, phases: phases))
            }
            if options.background == 0 { options.background = proto.rig.cameraProfile.offsetADU }
            if otfFile == nil { otfFile = proto.rig.otfFile; otfAttenuation = proto.rig.otfAttenuation }
        } else if case .none = prior {
            logger.warning("the recording's protocol is not available; estimating blind (give --k-prior)")
        }
    }

    /// Writes SR frames as a float32 OME-TIFF (one channel, T = phase sets).
    /// The noise model of raw SIM frames estimated from the data: the first phase of consecutive sets
    /// of one channel shows the same pattern on the same scene, so their differences hold the noise
    /// alone (`NoiseEstimation`, frame differences). With a single set only one frame is left, whose
    /// stripes would read as correlated noise: its correlation is dropped.
    static func estimateNoise(
        _ kept: [(channel: Int, frames: [[Float]])], width: Int, height: Int
    ) throws -> NoiseModel {
        let channel = kept[0].channel
        let firstPhases = kept.filter { $0.channel == channel }.prefix(9).map { $0.frames[0] }
        var estimate = try NoiseEstimation.estimate(frames: Array(firstPhases), width: width, height: height)
        if estimate.method == .singleFrame { estimate.model.correlation = nil }
        return estimate.model
    }

    public static func write(_ r: Result, to path: String, name: String) throws {
        try FloatStack.write(
            r.sr, width: 2 * r.width, height: 2 * r.height, pixelUm: r.pixelUm / 2, to: path, name: name,
            stream: "sr", mode: "sim2d-sr"
        ) { t, h in
            let per = r.parameters[t].angles.count * (r.parameters[t].angles.first?.phases.count ?? 0)
            let set = t < r.sets.count ? r.sets[t] : t
            h.inputs = Array((set * per)..<((set + 1) * per))
        }
    }

    /// Widefield (upsampled 2×) beside SR, as a PNG.
    public static func preview(_ r: Result, index: Int = 0) -> Data {
        let wf = r.widefield[index]
        var up = [Float](repeating: 0, count: 4 * wf.count)
        let W = 2 * r.width
        for y in 0..<(2 * r.height) { for x in 0..<W { up[y * W + x] = wf[(y / 2) * r.width + x / 2] } }
        let (w, h, px) = PNGWriter.panels([(W, 2 * r.height, up), (W, 2 * r.height, r.sr[index])])
        return PNGWriter.encode(width: w, height: h, pixels: px)
    }
}
