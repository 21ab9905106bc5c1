import Foundation
import Logging
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
import MoireStorage

/// Replays a recording: a `ReplayCamera` serves its planes in order through the same pipeline,
/// with simulated lasers, modulator and stage, and the runner checks every recorded device
/// state against the plan.
public enum ReplaySession {
    public static func run(
        recording: String, protocolFile: String? = nil, out: String? = nil, publish: String? = nil,
        overwrite: Bool = false,
        logger: Logger = Logger(label: "moire.replay"), onProgress: @escaping (RunProgress) -> Void
    ) throws -> PipelineResult {
        if let out,
            URL(fileURLWithPath: out).standardizedFileURL.resolvingSymlinksInPath()
                == URL(fileURLWithPath: recording).standardizedFileURL.resolvingSymlinksInPath()
        {
            throw MoireError(.usage, "the replay cannot be recorded over the recording it replays", place: out)
        }
        let reader = try RecordingFormat.openReader(path: recording)
        guard let layout = reader.layout, let planes = reader.planeRecords() else {
            throw MoireError(.format, "not a Moiré recording (no layout in its OME-XML)", place: recording)
        }
        let protoPath = protocolFile ?? layout.protocolFile
        var proto = try AcquisitionProtocol.load(file: protoPath)
        guard proto.roiWidth == layout.width, proto.roiHeight == layout.height,
            proto.planesPerTimepoint == layout.planesPerTimepoint
        else {
            throw MoireError(
                .validation,
                "the recording (\(layout.width)×\(layout.height), \(layout.planesPerTimepoint) planes per time point) does not match the protocol \(protoPath)",
                place: recording)
        }
        // Replay what was acquired: the recorded number of time points.
        let acquired = planes.filter(\.acquired).count
        proto.timepoints = max(1, acquired / layout.planesPerTimepoint)
        let clock = VirtualClock()
        let devices = try DeviceFactory.replaying(recording, rig: proto.rig, clock: clock)
        var options = PipelineOptions()
        options.recordingPath = out
        options.noRecording = out == nil
        options.overwrite = overwrite
        options.publishEndpoint = publish
        options.noPublish = publish == nil
        proto.firstFrameDeadlineMs = 1000
        proto.frameDeadlineMs = 300
        let pipeline = try AcquisitionPipeline(
            protocol: proto, devices: devices, options: options, clock: clock, logger: logger)
        return try pipeline.run(onProgress: onProgress)
    }
}
