/// Pixel types a frame can carry on the wire and in recordings.
public enum PixelFormat: String, Codable, Sendable, CaseIterable {
    case uint16
    case float32

    /// Bytes per pixel.
    public var bytesPerPixel: Int {
        switch self {
        case .uint16: return 2
        case .float32: return 4
        }
    }
}
