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
/// state against the plan. A plain TIFF stack (uint16 frames acquired elsewhere, in the
/// protocol's plan order) replays with the protocol that says what its frames are: its whole
/// time points go through the live stages; there is no recorded state to check.
public enum ReplaySession {
    public static func run(
        recording: String, protocolFile: String? = nil, out: String? = nil, publish: String? = nil,
        overwrite: Bool = false, waitForSubscribers: Int = 0,
        logger: Logger = Logger(label: "moire.replay"), onProgress: @escaping (RunProgress) -> Void
    ) throws -> PipelineResult {
        if let out,
            URL(fileURLWithPath: out).standardizedFileURL.resolvingSymlinksInPath()
                == URL(fileURLWithPath: recording).standardizedFileURL.resolvingSymlinksInPath()
        {
            throw MoireError(.usage, "the replay cannot be recorded over the recording it replays", place: out)
        }
        let reader = try RecordingFormat.openReader(path: recording)
        let layout = reader.layout
        let protoPath: String
        let frames: Int
        if let layout, let planes = reader.planeRecords() {
            protoPath = protocolFile ?? layout.protocolFile
            frames = planes.filter(\.acquired).count
        } else {
            guard let protocolFile else {
                throw MoireError(
                    .usage,
                    "not a Moiré recording; a plain TIFF stack replays with --protocol, which says what its frames are",
                    place: recording)
            }
            protoPath = protocolFile
            frames = reader.planeCount
        }
        var proto = try AcquisitionProtocol.load(file: protoPath)
        let planesPerTimepoint = layout?.planesPerTimepoint ?? proto.planesPerTimepoint
        guard proto.roiWidth == reader.width, proto.roiHeight == reader.height,
            proto.planesPerTimepoint == planesPerTimepoint
        else {
            throw MoireError(
                .validation,
                "the recording (\(reader.width)×\(reader.height), \(planesPerTimepoint) planes per time point) does not match the protocol \(protoPath) (\(proto.roiWidth)×\(proto.roiHeight), \(proto.planesPerTimepoint))",
                place: recording)
        }
        guard layout != nil || frames >= planesPerTimepoint else {
            throw MoireError(
                .validation,
                "the stack holds \(frames) frames; one time point of \(protoPath) has \(planesPerTimepoint)",
                place: recording)
        }
        if layout == nil, frames % planesPerTimepoint != 0 {
            logger.warning(
                "the stack's last frames make no whole time point; they are not replayed",
                metadata: ["frames": "\(frames)", "planesPerTimepoint": "\(planesPerTimepoint)"])
        }
        // Replay what was acquired: the recorded number of time points.
        proto.timepoints = max(1, frames / planesPerTimepoint)
        let clock = VirtualClock()
        let devices = try DeviceFactory.replaying(recording, rig: proto.rig, clock: clock)
        var options = PipelineOptions()
        options.recordingPath = out
        options.noRecording = out == nil
        options.overwrite = overwrite
        options.publishEndpoint = publish
        options.noPublish = publish == nil
        options.waitForSubscribers = waitForSubscribers
        proto.firstFrameDeadlineMs = 1000
        proto.frameDeadlineMs = 300
        let pipeline = try AcquisitionPipeline(
            protocol: proto, devices: devices, options: options, clock: clock, logger: logger)
        return try pipeline.run(onProgress: onProgress)
    }
}
