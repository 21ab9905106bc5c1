import Foundation
import MoireCore
import MoireFFT
import MoireHardware
import MoireReconstruction
import MoireSimulation

/// `moire bench llsm`: seconds for deskew plus 10 Richardson–Lucy iterations of a simulated
/// 512×512×101 lattice light-sheet stack (31.5°, 0.104 µm pixels, 0.4 µm steps). The raw stack and
/// the PSF are written as little-endian float32 files for the peer.
public enum LightSheetBench {
    public struct Report: Sendable {
        public var deskewSeconds: Double, deconvolutionSeconds: Double, planSeconds: Double
        public var raw: (w: Int, h: Int, d: Int), deskewed: (w: Int, h: Int, d: Int), psf: (w: Int, h: Int, d: Int)
        public var rawPath: String, psfPath: String
        public var angleDeg: Double, stepUm: Double, pixelUm: Double
    }

    public static func run(dir: String, width: Int = 512, height: Int = 512, planes: Int = 101, iterations: Int = 10)
        throws -> Report
    {
        FFT.useThreads(ProcessInfo.processInfo.activeProcessorCount)
        FFT.loadWisdom()
        let g = try LightSheetGeometry(angleDeg: 31.5, stepUm: 0.4, pixelUm: 0.104)
        var sim = LightSheetSimulator(
            geometry: g, optics: try LightSheetOptics(), width: width, height: height, planes: planes)
        sim.beads = 300
        let (stack, _) = sim.acquire(noiseSeed: 1)
        let raw = try Volume(planes: stack, width: width, height: height, voxelUm: (g.pixelUm, g.pixelUm, g.stepUm))
        let rawPath = dir + "/llsm-raw.f32"
        let psfPath = dir + "/llsm-psf.f32"
        try raw.data.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: rawPath)) }
        var t0 = DispatchTime.now().uptimeNanoseconds
        let desk = Deskew.apply(raw, geometry: g, pad: Float(sim.offsetADU))
        let deskewS = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let psf = LightSheetPSF.model(sim.optics, voxelUm: desk.voxelUm)
        try psf.data.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: psfPath)) }
        t0 = DispatchTime.now().uptimeNanoseconds
        // FFTW_MEASURE plans (slow to make the first time; kept as wisdom for the next run).
        let rl = try RichardsonLucy(
            psf: psf, width: desk.width, height: desk.height, depth: desk.depth,
            band: Deskew.band(geometry: g, nx: width, nz: planes, margin: psf.width / 2), rigor: .measure)
        try? FFT.saveWisdom()
        let planS = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        // Two runs, the faster counted (the first also touches memory for the first time).
        var rlS = Double.infinity
        for _ in 0..<2 {
            t0 = DispatchTime.now().uptimeNanoseconds
            _ = try rl.run(desk, iterations: iterations)
            rlS = min(rlS, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return Report(
            deskewSeconds: deskewS, deconvolutionSeconds: rlS, planSeconds: planS, raw: (width, height, planes),
            deskewed: (desk.width, desk.height, desk.depth), psf: (psf.width, psf.height, psf.depth),
            rawPath: rawPath, psfPath: psfPath, angleDeg: g.angleDeg, stepUm: g.stepUm, pixelUm: g.pixelUm)
    }
}
