/// The state of the devices when a frame was exposed, as the camera saw it.
public struct DeviceState: Codable, Sendable, Equatable {
    /// Pattern index shown by the modulator (−1: none / idle).
    public var pattern: Int
    /// Lasers that were on during the exposure, by name.
    public var lasers: [String]
    /// Stage z position in micrometres.
    public var zUm: Double
    /// Exposure time in milliseconds.
    public var exposureMs: Double

    public init(pattern: Int = -1, lasers: [String] = [], zUm: Double = 0, exposureMs: Double = 0) {
        self.pattern = pattern
        self.lasers = lasers
        self.zUm = zUm
        self.exposureMs = exposureMs
    }
}

/// Why a frame did not come (wire key `missingReason`, recording key `lost`).
public enum MissingReason: String, Codable, Sendable, Equatable {
    /// Exposed but never delivered (a lost transfer, a dropped frame).
    case lost
    /// Delivered with the wrong size.
    case malformed
    /// The camera had no free frame-pool slot to put it in: the consumers did not keep up.
    case poolExhausted = "pool-exhausted"
}

/// Everything a consumer needs to know about one frame (wire format v1 header, recording index).
///
/// Field names are the JSON keys of docs/wire-format.md; keep them in step.
public struct FrameHeader: Codable, Sendable, Equatable {
    /// `raw`, `sr`, `den`, `wf`, `vol`.
    public var stream: String
    public var run: String
    /// Per-run, per-stream sequence number, contiguous from 0; a gap means loss.
    public var seq: Int
    /// Index of the event in the acquisition plan (the planned position of this frame).
    public var index: Int
    public var t: Int
    public var channel: String
    public var c: Int
    public var angle: Int
    public var phase: Int
    public var z: Int
    public var width: Int
    public var height: Int
    public var pixel: PixelFormat
    public var pixelSizeUm: Double
    /// Exposure start, nanoseconds since the run started.
    public var exposureStartNs: Int64
    /// Wall-clock publication time, nanoseconds since the Unix epoch (0 until published).
    public var publishedNs: Int64
    /// True when the frame did not come: the payload is empty (wire) or zero (recording).
    public var missing: Bool
    /// Why a missing frame did not come (nil for a frame that came, or when unknown).
    public var missingReason: MissingReason?
    public var state: DeviceState
    /// For derived frames: the sequence numbers of the raw frames they were made from.
    public var inputs: [Int]?
    /// For derived frames: parameters used (reconstruction, denoiser weights version).
    public var params: [String: String]?
    /// Planes in the payload of a volume message (`vol.*`: z slowest); nil for 2D frames.
    public var depth: Int?

    public init(
        stream: String = "raw", run: String, seq: Int, index: Int, t: Int, channel: String, c: Int,
        angle: Int, phase: Int, z: Int, width: Int, height: Int, pixel: PixelFormat = .uint16,
        pixelSizeUm: Double, exposureStartNs: Int64 = 0, publishedNs: Int64 = 0, missing: Bool = false,
        state: DeviceState = DeviceState(), inputs: [Int]? = nil, params: [String: String]? = nil
    ) {
        self.stream = stream; self.run = run; self.seq = seq; self.index = index; self.t = t
        self.channel = channel; self.c = c; self.angle = angle; self.phase = phase; self.z = z
        self.width = width; self.height = height; self.pixel = pixel; self.pixelSizeUm = pixelSizeUm
        self.exposureStartNs = exposureStartNs; self.publishedNs = publishedNs; self.missing = missing
        self.state = state; self.inputs = inputs; self.params = params
    }

    /// Payload size in bytes for a complete frame.
    public var byteCount: Int { width * height * (depth ?? 1) * pixel.bytesPerPixel }
}
