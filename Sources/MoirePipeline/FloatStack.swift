import Foundation
import MoireCore
import MoireReconstruction
import MoireStorage

/// Writes derived frames (SR, denoised) as a one-channel float32 OME-TIFF, one plane per time point.
public enum FloatStack {
    /// `annotate` fills each plane's header (inputs, parameters) before it is written.
    public static func write(
        _ frames: [[Float]], width: Int, height: Int, pixelUm: Double, to path: String, name: String,
        stream: String, mode: String, annotate: (Int, inout FrameHeader) -> Void = { _, _ in }
    ) throws {
        let layout = RecordingLayout(
            run: "\(stream)-\(UUID().uuidString.prefix(8).lowercased())", name: name, mode: mode, channels: [stream],
            excitationNm: [], emissionNm: [], timepoints: frames.count, zPlanes: 1, angles: 1, phases: 1,
            width: width, height: height, pixel: .float32, pixelSizeUm: pixelUm, zStepUm: 0,
            objectiveNA: 0, magnification: 0, protocolFile: "", rigFile: "")
        let w = try OMETiffWriter(path: path, layout: layout)
        for (t, f) in frames.enumerated() {
            var h = FrameHeader(
                stream: stream, run: layout.run, seq: t, index: t, t: t, channel: stream, c: 0, angle: 0, phase: 0,
                z: 0,
                width: width, height: height, pixel: .float32, pixelSizeUm: pixelUm)
            annotate(t, &h)
            try f.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        try w.finish()
        // A finished derived file needs no recovery index.
        try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: path))
    }

    /// Writes volumes (one per time point) as a float32 OME-TIFF, Z planes of each in order, with the voxel size.
    public static func write(
        volumes: [Volume], to path: String, name: String, stream: String, mode: String,
        annotate: (Int, Int, inout FrameHeader) -> Void = { _, _, _ in }
    ) throws {
        guard let v0 = volumes.first else { throw MoireError(.usage, "no volume to write") }
        let layout = RecordingLayout(
            run: "\(stream)-\(UUID().uuidString.prefix(8).lowercased())", name: name, mode: mode, channels: [stream],
            excitationNm: [], emissionNm: [], timepoints: volumes.count, zPlanes: v0.depth, angles: 1, phases: 1,
            width: v0.width, height: v0.height, pixel: .float32, pixelSizeUm: v0.voxelUm.x, zStepUm: v0.voxelUm.z,
            objectiveNA: 0, magnification: 0, protocolFile: "", rigFile: "")
        let w = try OMETiffWriter(path: path, layout: layout)
        let plane = v0.width * v0.height
        for (t, v) in volumes.enumerated() {
            guard v.width == v0.width, v.height == v0.height, v.depth == v0.depth else {
                throw MoireError(
                    .usage,
                    "volume \(t) is \(v.width)×\(v.height)×\(v.depth); the first is \(v0.width)×\(v0.height)×\(v0.depth)"
                )
            }
            for z in 0..<v.depth {
                var h = FrameHeader(
                    stream: stream, run: layout.run, seq: t * v.depth + z, index: t * v.depth + z, t: t,
                    channel: stream, c: 0,
                    angle: 0, phase: 0, z: z, width: v.width, height: v.height, pixel: .float32,
                    pixelSizeUm: v.voxelUm.x)
                annotate(t, z, &h)
                try v.data.withUnsafeBytes {
                    try w.write(
                        header: h,
                        payload: UnsafeRawBufferPointer(rebasing: $0[(z * plane * 4)..<((z + 1) * plane * 4)]))
                }
            }
        }
        try w.finish()
        try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: path))
    }
}
