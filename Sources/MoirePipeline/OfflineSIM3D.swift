import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireFFT
import MoireReconstruction
import MoireStorage

/// Offline 3D-SIM (`moire reconstruct --sim3d`): phase-stepped z-stacks of a three-beam pattern (a
/// recording of mode sim3d, or a plain TIFF/MRC stack with its geometry given) reconstructed into
/// volumes with twice the lateral sampling. The parameters are estimated from the first volume's
/// stacks (`SIM3DReconstructor.estimate`, seeded by the pattern's period) and used for all.
public struct OfflineSIM3D {
    /// How the planes of one volume are ordered: z slowest (Moiré recordings: z × angle × phase) or
    /// angle slowest (angle × z × phase, as OMX-type instruments write); phase is always fastest.
    public enum StackOrder: String, Sendable, CaseIterable { case zap = "z-angle-phase", azp = "angle-z-phase" }

    public var angles = 3
    public var phases = 5
    /// Planes per stack (z); default: a recording's own.
    public var zPlanes: Int?
    public var order = StackOrder.zap
    public var pixelUm: Double?
    public var zStepUm: Double?
    /// Optics; nil: a recording's own (its protocol's rig and first channel), else 1.4, 1.518, 525 nm.
    public var na: Double?, immersionIndex: Double?, emissionNm: Double?
    public var excitationNm = 488.0
    /// The pattern's period (order 1, µm): the prior of the estimation; with `firstAngleDeg` the
    /// orientations are given too (180°/angles apart), else found.
    public var periodUm: Double?
    public var firstAngleDeg: Double?
    public var background: Double?
    public var wiener: WienerParameter?
    /// Only these volumes (a batch part); the parameters still come from the first volume of the
    /// input, so the parts of a batch are the volumes of the whole run.
    public var part: BatchPart?

    public init() {}

    public struct Result: Sendable {
        public var sr: [Volume]
        public var widefield: [Volume]
        public var estimate: SIM3DEstimate
    }

    public func run(
        input: String, logger: Logger = Logger(label: "moire.sim3d"), progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Result {
        var angles = self.angles
        var phases = self.phases
        var nz = zPlanes
        var order = self.order
        var dz = zStepUm
        var pixel = pixelUm
        var bg = background
        var na = self.na ?? 1.4
        var emission = emissionNm ?? 525
        var immersion = immersionIndex ?? 1.518
        /// A recording's own pattern priors (its protocol's first channel), when no period is given.
        var recordedPriors: [SIM3DAngle]?
        if input.lowercased().hasSuffix(".tif") || input.lowercased().hasSuffix(".tiff"),
            let r = try? RecordingFormat.openReader(path: input),
            let l = r.layout, l.mode == "sim3d"
        {
            // A Moiré sim3d recording: its own geometry.
            angles = l.angles; phases = l.phases; nz = nz ?? l.zPlanes; order = .zap
            if dz == nil, l.zStepUm > 0 { dz = l.zStepUm }
            if pixel == nil { pixel = l.pixelSizeUm }
            if FileManager.default.fileExists(atPath: l.protocolFile),
                let p = try? AcquisitionProtocol.load(file: l.protocolFile), !p.channels.isEmpty
            {
                na = self.na ?? p.rig.optics.objectiveNA; immersion = immersionIndex ?? p.rig.optics.immersionIndex
                emission = emissionNm ?? p.channels[0].emissionNm
                if periodUm == nil { recordedPriors = try? p.sim3dPriors(channel: 0) }
                if bg == nil { bg = p.rig.cameraProfile.offsetADU }
            }
        }
        let stack = try ImageImport.load(input)
        if bg == nil { bg = Double(LightSheetProcessor.background(of: Array(stack.planes.prefix(64)))) }
        guard !stack.isComplex, !stack.planes.isEmpty else {
            throw MoireError(.format, "no real-valued planes to reconstruct", place: input)
        }
        guard let nz else {
            throw MoireError(.usage, "the planes per stack are unknown; give --z-planes", place: input)
        }
        guard let dz, dz > 0 else { throw MoireError(.usage, "the z step is unknown; give --z-step-um", place: input) }
        guard let pixel = pixel ?? stack.pixelSizeUm, pixel > 0 else {
            throw MoireError(.usage, "the pixel size is unknown; give --pixel-um", place: input)
        }
        guard (periodUm ?? 0) > 0 || recordedPriors != nil else {
            throw MoireError(
                .usage, "3D-SIM needs the pattern's period as a prior (--k-prior PERIOD_UM[@FIRST_ANGLE_DEG])",
                place: input)
        }
        guard stack.width == stack.height else {
            throw MoireError(
                .usage, "3D-SIM reconstructs square frames; these are \(stack.width)×\(stack.height) (crop them first)",
                place: input)
        }
        let per = nz * angles * phases
        guard angles >= 1, phases >= 5, nz >= 4, stack.planes.count % per == 0 else {
            throw MoireError(
                .usage,
                "\(stack.planes.count) planes are not whole volumes of \(nz) z × \(angles) angles × \(phases) phases (≥ 5 phases, ≥ 4 planes)",
                place: input)
        }
        let n = stack.width
        let rec = try SIM3DReconstructor(
            n: n, nz: nz, pixelUm: pixel, dzUm: dz,
            optics: Widefield3D(na: na, immersionIndex: immersion, emissionNm: emission))
        rec.background = bg ?? 0
        if let wiener { rec.wiener = wiener }
        let plane = n * n
        /// Stacks `[angle][phase]` of volume v.
        func stacks(_ v: Int) -> [[[Float]]] {
            SIM3DReconstructor.phaseStacks(nz: nz, angles: angles, phases: phases, plane: plane) { z, a, p in
                stack.planes[v * per + (order == .zap ? (z * angles + a) * phases + p : (a * nz + z) * phases + p)]
            }
        }
        let first = stacks(0)
        let prior: SIM3DReconstructor.Prior
        if let recordedPriors {
            prior = .patterns(recordedPriors)
        } else if let period = periodUm, let firstAngleDeg {
            let kUm = 1 / period
            let kz = try SIM3DAngle.threeBeamKz(kUm: kUm, excitationNm: excitationNm, immersionIndex: immersion)
            prior = .patterns(
                (0..<angles).map { a in
                    let th = (firstAngleDeg + Double(a) * 180 / Double(angles)) * .pi / 180
                    return SIM3DAngle(
                        kx: kUm * cos(th), ky: kUm * sin(th), kz: kz,
                        phases: (0..<phases).map { 2 * .pi * Double($0) / Double(phases) },
                        m1: 0.7, m2: 0.5)
                })
        } else {
            let period = periodUm!
            prior = .period(
                period,
                kz: try SIM3DAngle.threeBeamKz(kUm: 1 / period, excitationNm: excitationNm, immersionIndex: immersion))
        }
        let estimate = try rec.estimate(first, prior: prior)
        for (a, (e, d)) in zip(estimate.angles, estimate.projected.angles).enumerated() {
            logger.info(
                "3D-SIM parameters",
                metadata: [
                    "angle": "\(a)", "k": "\(String(format: "%.4f", hypot(e.kx, e.ky)))",
                    "orientation": "\(String(format: "%.2f", d.angleDeg))", "m1": "\(String(format: "%.2f", e.m1))",
                    "m2": "\(String(format: "%.2f", e.m2))", "flagged": "\(d.flagged)",
                ])
        }
        let count = stack.planes.count / per
        var result = Result(sr: [], widefield: [], estimate: estimate)
        let volumes = part?.range(of: count) ?? 0..<count
        for (done, v) in volumes.enumerated() {
            let s = v == 0 ? first : stacks(v)
            result.sr.append(
                Volume(
                    width: 2 * n, height: 2 * n, depth: nz, data: try rec.reconstruct(s, parameters: estimate.angles),
                    voxelUm: (pixel / 2, pixel / 2, dz)))
            result.widefield.append(
                Volume(width: n, height: n, depth: nz, data: try rec.widefield(s), voxelUm: (pixel, pixel, dz)))
            progress(done + 1, volumes.count)
        }
        return result
    }

    /// Writes the SR volumes as a float32 OME-TIFF (Z planes per time point, voxel size on the 2× grid).
    public static func write(_ r: Result, to path: String, name: String) throws {
        try FloatStack.write(volumes: r.sr, to: path, name: name, stream: "sr3d", mode: "sim3d-sr")
    }

    /// A PNG of the middle plane of the first volume: widefield beside SR.
    public static func preview(_ r: Result) -> Data {
        func mid(_ v: Volume) -> (width: Int, height: Int, pixels: [Float]) {
            let z = v.depth / 2
            let plane = v.width * v.height
            return (v.width, v.height, Array(v.data[(z * plane)..<((z + 1) * plane)]))
        }
        // The widefield plane doubled (nearest), to sit beside the SR plane at the same scale.
        let wf = mid(r.widefield[0])
        var big = [Float](repeating: 0, count: 4 * wf.pixels.count)
        for y in 0..<(2 * wf.height) {
            for x in 0..<(2 * wf.width) { big[y * 2 * wf.width + x] = wf.pixels[(y / 2) * wf.width + x / 2] }
        }
        let (w, h, px) = PNGWriter.panels([(2 * wf.width, 2 * wf.height, big), mid(r.sr[0])])
        return PNGWriter.encode(width: w, height: h, pixels: px)
    }
}
