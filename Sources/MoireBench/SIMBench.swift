import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireFFT
import MoireHardware
import MoirePipeline
import MoireReconstruction
import MoireSimulation

/// `moire bench sim2d`: milliseconds per SR frame for a simulated 512×512×9 phase set.
public enum SIMBench {
    /// Acquires one phase set of `protocolFile` (its ROI) on the simulated rig, as floats.
    public static func acquire(protocolFile: String) throws -> (AcquisitionProtocol, [[Float]]) {
        var p = try AcquisitionProtocol.load(file: protocolFile)
        p.timepoints = 1
        let clock = VirtualClock()
        let devices = try DeviceFactory.make(rig: p.rig, clock: clock)
        let n = p.roiWidth * p.roiHeight
        var frames: [[Float]] = []
        let r = Runner(protocol: p, devices: devices, runID: "bench", clock: clock).run(
            pool: FramePool(slots: 8, bytes: n * 2)
        ) { f in
            frames.append(
                f.withPayload { raw in
                    let b = raw.bindMemory(to: UInt16.self); return (0..<n).map { Float(b[$0]) }
                })
            f.release()
        }
        guard r.reason == "completed", frames.count == p.planesPerTimepoint else {
            throw MoireError(.hardware, "simulation for the benchmark failed: \(r.reason)")
        }
        return (p, Array(frames.prefix(p.angles * p.phases)))
    }

    /// One simulated phase set, its parameters estimated and its weights made, ready to be
    /// reconstructed frame after frame (`frameMs`), with the raw frames saved for a peer.
    public final class Session {
        public let width: Int
        public let estimateMs: Double
        public let firstFrameMs: Double
        /// The nine raw frames less the camera offset, float32, angle-major.
        public let rawPath: String
        public let pixelUm: Double
        public let na: Double
        let reconstructor: SIM2DReconstructor
        let frames: [[Float]]
        let parameters: SIMParameters
        var output: [Float]

        init(protocolFile: String, dir: String) throws {
            FFT.useThreads(ProcessInfo.processInfo.activeProcessorCount)
            FFT.loadWisdom()
            defer { try? FFT.saveWisdom() }
            let (p, frames) = try acquire(protocolFile: protocolFile)
            guard let setName = p.channels[0].patternSet,
                let set = p.rig.modulator?.profile.modulator?.patternSet(named: setName)
            else {
                throw MoireError(.usage, "the benchmark protocol must be a SIM protocol", place: protocolFile)
            }
            var o = SIM2DOptions()
            o.background = p.rig.cameraProfile.offsetADU
            reconstructor = try SIM2DReconstructor(
                width: p.roiWidth, height: p.roiHeight, pixelUm: p.pixelSizeUm, angles: p.angles,
                phases: p.phases, otf: IdealOTF(na: p.rig.optics.objectiveNA, emissionNm: p.channels[0].emissionNm),
                options: o, rigor: .measure)
            let priors = PatternPrior.from(set, angles: p.angles, phases: p.phases)
            var t0 = DispatchTime.now().uptimeNanoseconds
            parameters = try reconstructor.estimate(frames, priors: priors)
            estimateMs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            t0 = DispatchTime.now().uptimeNanoseconds
            // The first frame includes making the weights for these parameters.
            _ = try reconstructor.reconstruct(frames, parameters: parameters)
            firstFrameMs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            output = [Float](repeating: 0, count: 4 * p.roiWidth * p.roiHeight)
            self.frames = frames
            width = p.roiWidth
            pixelUm = p.pixelSizeUm
            na = p.rig.optics.objectiveNA
            rawPath = "\(dir)/sim2d-raw.f32"
            var flat = [Float]()
            flat.reserveCapacity(frames.count * frames[0].count)
            for f in frames { flat.append(contentsOf: f.map { $0 - Float(o.background) }) }
            try flat.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: rawPath)) }
        }

        /// Reconstructs the set once more with fixed parameters; its milliseconds.
        public func frameMs() throws -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            try output.withUnsafeMutableBufferPointer { buffer in
                try reconstructor.reconstruct(frames, parameters: parameters, into: buffer)
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        }
    }

    public static func prepare(protocolFile: String, dir: String) throws -> Session {
        try Session(protocolFile: protocolFile, dir: dir)
    }
}

/// The median of `values` (the upper one of an even count).
public func median(_ values: [Double]) -> Double {
    precondition(!values.isEmpty, "the median of no values")
    return values.sorted()[values.count / 2]
}

/// The lower and upper quartiles of `values` (nearest rank).
public func quartiles(_ values: [Double]) -> (lower: Double, upper: Double) {
    precondition(!values.isEmpty, "the quartiles of no values")
    let sorted = values.sorted()
    return (sorted[(sorted.count - 1) / 4], sorted[(3 * (sorted.count - 1) + 3) / 4])
}

/// A live 2D-SIM acquisition in real time, with recording: does the SIM stage reconstruct every
/// complete phase set at camera speed?
///
/// The simulated rig renders the raw frames ahead of time into a recording (in virtual time: its
/// physical simulation, Poisson noise included, costs more than a real camera's CPU budget), which
/// a `ReplayCamera` then serves in real time at the protocol's frame rate through the whole
/// pipeline: raw bus, recorder and the live SIM stage, with simulated lasers and modulator.
public enum LiveSIMBench {
    public struct Result: Sendable {
        public var rawFramesPerSecond: Double
        public var framesLost: Int
        public var sets: SIMStageCounters
        public var seconds: Double
        public var width: Int
    }

    /// Runs `protocolFile` (a sim2d protocol) for `timepoints` phase sets with the exposure set so
    /// that raw frames come at `rawFramesPerSecond` (less the camera's readout and the
    /// modulator's settling per frame), recording into `dir`.
    public static func run(protocolFile: String, rawFramesPerSecond: Double, timepoints: Int, dir: String) throws
        -> Result
    {
        var p = try AcquisitionProtocol.load(file: protocolFile)
        guard p.mode == .sim2d else {
            throw MoireError(.usage, "the live SIM benchmark needs a sim2d protocol", place: protocolFile)
        }
        p.timepoints = timepoints
        p.intervalMs = 0
        // Each frame takes its exposure, the rolling readout of the ROI and the modulator's settling.
        let readoutMs = p.rig.cameraProfile.readoutMs(rows: p.roiHeight)
        let settleMs = p.rig.modulator?.profile.modulator?.settleMs ?? 0
        let exposureMs = 1000 / rawFramesPerSecond - readoutMs - settleMs
        guard exposureMs > 0.1 else {
            throw MoireError(
                .usage,
                String(
                    format: "%.0f raw frames/s leaves no exposure after %.2f ms readout and %.2f ms settling",
                    rawFramesPerSecond, readoutMs, settleMs), place: protocolFile)
        }
        for c in p.channels.indices { p.channels[c].exposureMs = exposureMs }
        // 1. The frames, rendered by the simulated rig in virtual time.
        var rendering = p
        rendering.reconstruction.enabled = false
        let source = "\(dir)/bench-live-sim-source.ome.tif"
        var renderOptions = PipelineOptions()
        renderOptions.recordingPath = source
        renderOptions.noPublish = true
        _ = try AcquisitionPipeline(protocol: rendering, options: renderOptions, clock: VirtualClock()).run()
        // 2. Served in real time through the whole pipeline, live SIM on, recording.
        let clock = RealClock()
        let devices = try DeviceFactory.replaying(source, rig: p.rig, clock: clock)
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/bench-live-sim.ome.tif"
        o.noPublish = true
        let pipe = try AcquisitionPipeline(protocol: p, devices: devices, options: o, clock: clock)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = try pipe.run()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        guard let sets = r.sim else { throw MoireError(.usage, "the run had no live SIM stage", place: protocolFile) }
        return Result(
            rawFramesPerSecond: Double(r.run.delivered) / seconds, framesLost: r.run.missing, sets: sets,
            seconds: seconds, width: p.roiWidth)
    }
}
