import Foundation
import Logging
import MoireConfig
import MoireCore
import MoireFFT
import MoireReconstruction
import MoireStorage

/// Offline light-sheet processing (`moire reconstruct --llsm`): raw sample-scan stacks (a recording,
/// or a plain TIFF/MRC/PNG stack) deskewed and deconvolved into volumes.
public struct OfflineLightSheet {
    public var angleDeg: Double?
    public var stepUm: Double?
    public var pixelUm: Double?
    /// Planes per volume in a plain stack (default: all planes are one volume).
    public var planesPerVolume: Int?
    public var iterations = 10
    /// A measured PSF (TIFF/MRC, odd sides, in the deskewed frame); default: the Gaussian model of `optics`.
    public var psfFile: String?
    public var optics: LightSheetOptics
    public var background: Float?
    /// Also rotate each volume into the coverslip frame (isotropic voxels).
    public var rotate = false
    /// Only these volumes (a batch part); each volume is processed on its own, so the parts of a
    /// batch are the volumes of the whole run.
    public var part: BatchPart?

    public init() throws { optics = try LightSheetOptics() }

    public struct Result: Sendable {
        public var raw: [Volume]
        public var deskewed: [Volume]
        public var deconvolved: [Volume]
        public var geometry: LightSheetGeometry
    }

    public func run(
        input: String, logger: Logger = Logger(label: "moire.llsm"),
        progress: (String, Int, Int) -> Void = { _, _, _ in }
    ) throws -> Result {
        let stack = try ImageImport.load(input)
        guard !stack.isComplex, !stack.planes.isEmpty else {
            throw MoireError(.format, "no real-valued planes to process", place: input)
        }
        var per = planesPerVolume ?? stack.planes.count
        var missing = Set<Int>()
        var angle = angleDeg
        var step = stepUm
        var optics = self.optics
        if let r = try? RecordingFormat.openReader(path: input), let l = r.layout {
            per = planesPerVolume ?? l.zPlanes
            if step == nil, l.zStepUm > 0 { step = l.zStepUm }
            for (i, rec) in (r.planeRecords() ?? []).enumerated() where rec.header.missing { missing.insert(i) }
            // A Moiré llsm recording: the sheet angle and the optics from its protocol's rig.
            if FileManager.default.fileExists(atPath: l.protocolFile),
                let p = try? AcquisitionProtocol.load(file: l.protocolFile),
                let ls = p.rig.lightSheet
            {
                if angle == nil { angle = ls.angleDeg }
                if psfFile == nil {
                    optics = try p.lightSheetOptics(emissionNm: p.channels.first?.emissionNm ?? optics.emissionNm)
                }
            }
        }
        guard let angle else {
            throw MoireError(.usage, "the sheet angle is unknown; give --angle (degrees)", place: input)
        }
        guard let step else { throw MoireError(.usage, "the scan step is unknown; give --step-um", place: input) }
        guard let pixel = pixelUm ?? stack.pixelSizeUm else {
            throw MoireError(.usage, "the pixel size is unknown; give --pixel-um", place: input)
        }
        let g = try LightSheetGeometry(angleDeg: angle, stepUm: step, pixelUm: pixel)
        guard per >= 2, stack.planes.count % per == 0 else {
            throw MoireError(
                .usage, "\(stack.planes.count) planes is not a whole number of volumes of \(per) planes (≥ 2)",
                place: input)
        }
        if !missing.isEmpty {
            logger.warning(
                "missing planes filled with the stack's background and flagged", metadata: ["count": "\(missing.count)"]
            )
        }
        FFT.useThreads(ProcessInfo.processInfo.activeProcessorCount)
        var result = Result(raw: [], deskewed: [], deconvolved: [], geometry: g)
        let psfFile = self.psfFile
        let processor = LightSheetProcessor(geometry: g, iterations: iterations, background: background) { voxel in
            if let psfFile {
                let p = try ImageImport.load(psfFile)
                return try Volume(planes: p.planes, width: p.width, height: p.height, voxelUm: voxel)
            }
            return LightSheetPSF.model(optics, voxelUm: voxel)
        }
        let count = stack.planes.count / per
        for v in part?.range(of: count) ?? 0..<count {
            let planes = Array(stack.planes[(v * per)..<((v + 1) * per)])
            let gone = Set((0..<per).filter { missing.contains(v * per + $0) })
            let out: (raw: Volume, deskewed: Volume, volume: Volume)
            do {
                out = try processor.process(planes: planes, width: stack.width, height: stack.height, missing: gone) {
                    i, n in
                    progress("volume \(v + 1)/\(count)", i, n)
                }
            } catch let e as MoireError where e.kind == .usage {
                throw MoireError(e.kind, e.message, place: psfFile ?? input)  // the PSF does not fit
            }
            result.raw.append(out.raw); result.deskewed.append(out.deskewed)
            result.deconvolved.append(rotate ? CoverslipRotation.apply(out.volume, angleDeg: g.angleDeg) : out.volume)
        }
        return result
    }

    /// LLS-SIM recordings (`llssim` on a light-sheet rig): every plane's phase set reconstructed by
    /// `sim` (on the 2× grid), the SR planes stacked per time point and deskewed at half the pixel.
    /// With `part`, only that part's volumes (whole volumes; the SIM parameters still come from the
    /// recording's first set, so the parts together equal the whole).
    public func runSIM(input: String, sim: OfflineSIM, logger: Logger = Logger(label: "moire.llsm")) throws -> Result {
        let r = try RecordingFormat.openReader(path: input)
        guard let l = r.layout, l.mode == "llssim" else {
            throw MoireError(.usage, "not an llssim recording", place: input)
        }
        guard FileManager.default.fileExists(atPath: l.protocolFile),
            let p = try? AcquisitionProtocol.load(file: l.protocolFile),
            let ls = p.rig.lightSheet
        else {
            throw MoireError(
                .usage, "the recording's protocol and its light-sheet rig are needed for LLS-SIM volumes", place: input)
        }
        let per = l.zPlanes
        var sim = sim
        sim.part = part
        sim.setsPerPartUnit = per
        let srResult = try sim.run(input: input, logger: logger)
        guard srResult.sr.count % per == 0 else {
            throw MoireError(
                .numeric,
                "\(srResult.sr.count) SR planes are not whole volumes of \(per) planes (a phase set was skipped)",
                place: input)
        }
        let g = try LightSheetGeometry(
            angleDeg: angleDeg ?? ls.angleDeg, stepUm: stepUm ?? l.zStepUm, pixelUm: (pixelUm ?? l.pixelSizeUm) / 2)
        var result = Result(raw: [], deskewed: [], deconvolved: [], geometry: g)
        for v in 0..<(srResult.sr.count / per) {
            let raw = try Volume(
                planes: Array(srResult.sr[(v * per)..<((v + 1) * per)]), width: 2 * srResult.width,
                height: 2 * srResult.height,
                voxelUm: (g.pixelUm, g.pixelUm, g.stepUm))
            let desk = Deskew.apply(raw, geometry: g, pad: 0)
            result.raw.append(raw); result.deskewed.append(desk)
            result.deconvolved.append(rotate ? CoverslipRotation.apply(desk, angleDeg: g.angleDeg) : desk)
        }
        return result
    }

    /// Writes the processed volumes as a float32 OME-TIFF (Z planes per time point, voxel size after deskew).
    public static func write(_ r: Result, to path: String, name: String) throws {
        try FloatStack.write(volumes: r.deconvolved, to: path, name: name, stream: "vol", mode: "llsm-volume") {
            _, _, h in
            h.params = ["sheetAngleDeg": String(r.geometry.angleDeg), "stepUm": String(r.geometry.stepUm)]
        }
    }

    /// A PNG of maximum intensity projections along z: raw (skewed) stack, deskewed, deconvolved (first volume).
    public static func preview(_ r: Result) -> Data {
        let (w, h, px) = PNGWriter.panels(
            [r.raw[0].mip(along: 2), r.deskewed[0].mip(along: 2), r.deconvolved[0].mip(along: 2)]
                .map { (width: $0.width, height: $0.height, pixels: $0.pixels) })
        return PNGWriter.encode(width: w, height: h, pixels: px)
    }
}
