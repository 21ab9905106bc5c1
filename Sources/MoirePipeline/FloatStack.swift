import Foundation
import MoireCore
import MoireStorage

/// Writes derived frames (SR, denoised) as a one-channel float32 OME-TIFF, one plane per time point.
enum FloatStack {
    /// `annotate` fills each plane's header (inputs, parameters) before it is written.
    static func write(_ frames: [[Float]], width: Int, height: Int, pixelUm: Double, to path: String, name: String,
                      stream: String, mode: String, annotate: (Int, inout FrameHeader) -> Void = { _, _ in }) throws {
        let layout = RecordingLayout(run: "\(stream)-\(UUID().uuidString.prefix(8).lowercased())", name: name, mode: mode, channels: [stream],
                                     excitationNm: [], emissionNm: [], timepoints: frames.count, zPlanes: 1, angles: 1, phases: 1,
                                     width: width, height: height, pixel: .float32, pixelSizeUm: pixelUm, zStepUm: 0,
                                     objectiveNA: 0, magnification: 0, protocolFile: "", rigFile: "")
        let w = try OMETiffWriter(path: path, layout: layout)
        for (t, f) in frames.enumerated() {
            var h = FrameHeader(stream: stream, run: layout.run, seq: t, index: t, t: t, channel: stream, c: 0, angle: 0, phase: 0, z: 0,
                                width: width, height: height, pixel: .float32, pixelSizeUm: pixelUm)
            annotate(t, &h)
            try f.withUnsafeBytes { try w.write(header: h, payload: $0) }
        }
        try w.finish()
        // A finished derived file needs no recovery index.
        try? FileManager.default.removeItem(atPath: RecordingIndex.path(for: path))
    }
}
