import Foundation
import MoireConfig
import MoireCore
import MoireFFT
import MoireReconstruction

/// FFTW wisdom for a protocol's shapes, made once per machine (`moire wisdom`): the live stages
/// then plan with `.fromWisdom`, getting the measured plans at once instead of timing candidates
/// for tens of seconds when the first volume arrives.
public enum Wisdom {
    /// What was planned for one protocol.
    public struct Report: Sendable {
        public var protocolFile: String
        public var shapes: [String]
        public var seconds: Double
    }

    /// Saves the wisdom gathered so far (`Runtime.fftWisdomPath`); an error names the file.
    public static func save() throws { try FFT.saveWisdom() }

    /// Makes measured plans for every transform the live stages of `protocolFile` use (light-sheet
    /// deconvolution per channel, the 2D-SIM reconstruction grid) and adds them to the loaded wisdom.
    public static func make(protocolFile: String, progress: (String) -> Void = { _ in }) throws -> Report {
        let p = try AcquisitionProtocol.load(file: protocolFile)
        let started = DispatchTime.now().uptimeNanoseconds
        var shapes: [String] = []
        switch p.mode {
        case .llsm:
            guard let ls = p.rig.lightSheet else {
                throw MoireError(.config, "mode llsm needs a rig with a light sheet", place: p.rig.file)
            }
            let iterations = p.lightSheet.iterations
            guard iterations > 0 else { break }
            let geometry = try LightSheetGeometry(angleDeg: ls.angleDeg, stepUm: p.zStepUm, pixelUm: p.pixelSizeUm)
            let measured = try VolumeStage.measuredPSFs(for: p)
            for (c, channel) in p.channels.enumerated() {
                let optics = try p.lightSheetOptics(emissionNm: channel.emissionNm)
                let processor = LightSheetProcessor(geometry: geometry, iterations: iterations, rigor: .measure) {
                    measured[c] ?? LightSheetPSF.model(optics, voxelUm: $0)
                }
                let shape = "deconvolution of \(p.roiWidth)×\(p.roiHeight)×\(p.zPlanes) stacks (\(channel.name))"
                progress(shape)
                try processor.prepare(width: p.roiWidth, height: p.roiHeight, depth: p.zPlanes)
                shapes.append(shape)
            }
        case .sim2d, .llssim:
            let shape = "2D-SIM reconstruction of \(p.roiWidth)×\(p.roiHeight) frames"
            progress(shape + " (the grid's transform with FFTW's patient search: a minute or two)")
            try SIM2DReconstructor.makePatientWisdom(width: p.roiWidth, height: p.roiHeight)
            _ = try SIM2DReconstructor(
                width: p.roiWidth, height: p.roiHeight, pixelUm: p.pixelSizeUm, angles: p.angles, phases: p.phases,
                otf: IdealOTF(na: p.rig.optics.objectiveNA, emissionNm: p.channels[0].emissionNm), rigor: .measure)
            shapes.append(shape)
        default:
            break
        }
        return Report(
            protocolFile: protocolFile, shapes: shapes,
            seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }
}
