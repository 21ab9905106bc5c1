import Foundation
import MoireCore
import MoireReconstruction
import MoireTransport

/// The detection OTF a job names (a worker on another machine has no rig files).
public enum OTFSpec: Codable, Sendable, Hashable {
    case ideal(na: Double, emissionNm: Double, attenuation: Double)
    case measured(samples: [Double], step: Double)

    /// The OTF a reconstructor uses.
    func make() throws -> RadialOTF {
        switch self {
        case .ideal(let na, let emissionNm, let attenuation):
            guard na > 0, na < 2, emissionNm > 100, emissionNm < 2000, attenuation > 0, attenuation <= 1 else {
                throw MoireError(.format, "job OTF: NA \(na), emission \(emissionNm) nm, attenuation \(attenuation)")
            }
            return IdealOTF(na: na, emissionNm: emissionNm, attenuation: attenuation)
        case .measured(let samples, let step):
            guard samples.count <= 100_000 else { throw MoireError(.format, "job OTF: \(samples.count) samples") }
            return try MeasuredRadialOTF(samples: samples, step: step)
        }
    }

    /// The spec of a reconstructor's OTF.
    init(_ otf: RadialOTF) {
        if let measured = otf as? MeasuredRadialOTF {
            self = .measured(samples: measured.samples, step: measured.step)
        } else if let ideal = otf as? IdealOTF {
            self = .ideal(na: ideal.na, emissionNm: ideal.wavelengthUm * 1000, attenuation: ideal.attenuation)
        } else {
            self = .ideal(na: 1, emissionNm: 500, attenuation: 1)
        }
    }
}

/// One phase set to reconstruct elsewhere: the reconstructor's geometry and options, the set's
/// parameters, and (as the job's second part) its frames, float32, orientation-major.
public struct SIMJob: Codable, Sendable {
    public var width: Int
    public var height: Int
    public var pixelUm: Double
    public var angles: Int
    public var phases: Int
    public var otf: OTFSpec
    public var options: SIM2DOptions
    public var parameters: SIMParameters
    /// How the frames travel: raw camera counts as uint16 (half the bytes, exact), or float32.
    public var framePixel: PixelFormat = .float32

    /// The job for `frames` reconstructed like `reconstructor` does with `parameters`.
    public init(reconstructor: SIM2DReconstructor, parameters: SIMParameters) {
        width = reconstructor.width
        height = reconstructor.height
        pixelUm = reconstructor.pixelUm
        angles = reconstructor.angles
        phases = reconstructor.phases
        otf = OTFSpec(reconstructor.otf)
        options = reconstructor.options
        self.parameters = parameters
    }

    /// The work item: this description, then the frames (`uint16`: whole camera counts, which
    /// raw frames are; the values are rounded and clamped to 0…65535).
    public func item(sequence: Int, frames: [[Float]], pixel: PixelFormat = .float32) throws -> WorkItem {
        var job = self
        job.framePixel = pixel
        var pixels = Data(capacity: frames.count * width * height * pixel.bytesPerPixel)
        for frame in frames {
            switch pixel {
            case .float32:
                frame.withUnsafeBytes { pixels.append(contentsOf: $0) }
            case .uint16:
                let counts = frame.map { UInt16(max(0, min(65535, $0.rounded()))) }
                counts.withUnsafeBytes { pixels.append(contentsOf: $0) }
            }
        }
        return WorkItem(sequence: sequence, parts: [try JSONEncoder().encode(job), pixels])
    }

    /// What a reconstructed set comes back as: the SR frame, the widefield frame, and the
    /// regularisation at the OTF cutoff the adaptive filter used (NaN: constant filter).
    public struct Output: Sendable {
        public var sr: Data
        public var widefield: Data
        public var wienerAtCutoff: Double?

        public func item(sequence: Int) -> WorkItem {
            let cutoff = withUnsafeBytes(of: wienerAtCutoff ?? .nan) { Data($0) }
            return WorkItem(sequence: sequence, parts: [sr, widefield, cutoff])
        }

        /// Reads a result, checking its sizes against the job's frame size.
        public init(_ item: WorkItem, width: Int, height: Int) throws {
            guard item.parts.count == 3, item.parts[0].count == 16 * width * height,
                item.parts[1].count == 4 * width * height, item.parts[2].count == 8
            else {
                throw MoireError(
                    .format, "result of set \(item.sequence): \(item.parts.map(\.count)) bytes, not SR, WF and w")
            }
            sr = item.parts[0]
            widefield = item.parts[1]
            let cutoff = item.parts[2].withUnsafeBytes { $0.loadUnaligned(as: Double.self) }
            wienerAtCutoff = cutoff.isNaN ? nil : cutoff
        }

        init(sr: Data, widefield: Data, wienerAtCutoff: Double?) {
            self.sr = sr
            self.widefield = widefield
            self.wienerAtCutoff = wienerAtCutoff
        }
    }
}

/// Reconstructs SIM jobs (in a `moire worker`, or in process when no worker is there), one
/// reconstructor per geometry, kept. A job that does not describe itself consistently (sizes,
/// counts, parameters) is refused with what is wrong; the worker answers it with an empty result.
// Sendable by hand: `reconstructors` guarded by `lock`; one job at a time (the lock is held while it runs).
public final class SIMWorkProcessor: @unchecked Sendable {
    private let lock = NSLock()
    /// A reconstructor and the frame buffers of one geometry.
    private final class Geometry {
        let reconstructor: SIM2DReconstructor
        var frames: [[Float]]
        init(reconstructor: SIM2DReconstructor, frames: [[Float]]) {
            self.reconstructor = reconstructor
            self.frames = frames
        }
    }
    private var reconstructors: [Data: Geometry] = [:]

    public init() {}

    /// Reconstructors made so far (one per geometry).
    public var reconstructorCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return reconstructors.count
    }

    public func process(_ item: WorkItem) throws -> WorkItem {
        guard item.parts.count == 2 else {
            throw MoireError(.format, "job \(item.sequence): \(item.parts.count) parts, expected 2")
        }
        let job = try JSONDecoder().decode(SIMJob.self, from: item.parts[0])
        guard (16...8192).contains(job.width), (16...8192).contains(job.height), (1...8).contains(job.angles),
            (3...16).contains(job.phases), job.parameters.angles.count == job.angles
        else {
            throw MoireError(
                .format,
                "job \(item.sequence): \(job.width)×\(job.height), \(job.angles) × \(job.phases) is not a SIM set")
        }
        let plane = job.width * job.height
        let frameCount = job.angles * job.phases
        let bytes = frameCount * plane * job.framePixel.bytesPerPixel
        guard item.parts[1].count == bytes else {
            throw MoireError(
                .format, "job \(item.sequence): \(item.parts[1].count) bytes of frames, expected \(bytes)")
        }
        var key = job
        key.parameters = SIMParameters(angles: [])
        // Sorted keys: the same geometry always gives the same bytes (the cache key).
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let keyData = try encoder.encode(key)
        lock.lock()
        defer { lock.unlock() }
        if reconstructors[keyData] == nil {
            let reconstructor = try SIM2DReconstructor(
                width: job.width, height: job.height, pixelUm: job.pixelUm, angles: job.angles, phases: job.phases,
                otf: try job.otf.make(), options: job.options, rigor: .fromWisdom)
            reconstructors[keyData] = Geometry(
                reconstructor: reconstructor,
                frames: [[Float]](repeating: [Float](repeating: 0, count: plane), count: frameCount))
        }
        let geometry = reconstructors[keyData]!
        // The frames into the geometry's buffers (no allocation per set).
        item.parts[1].withUnsafeBytes { raw in
            for frame in 0..<frameCount {
                geometry.frames[frame].withUnsafeMutableBufferPointer { destination in
                    switch job.framePixel {
                    case .float32:
                        let floats = raw.bindMemory(to: Float.self)
                        for i in 0..<plane { destination[i] = floats[frame * plane + i] }
                    case .uint16:
                        let counts = raw.bindMemory(to: UInt16.self)
                        for i in 0..<plane { destination[i] = Float(counts[frame * plane + i]) }
                    }
                }
            }
        }
        let reconstructor = geometry.reconstructor
        var sr = Data(count: 16 * plane)
        try sr.withUnsafeMutableBytes { bytes in
            try reconstructor.reconstruct(
                geometry.frames, parameters: job.parameters, into: bytes.bindMemory(to: Float.self))
        }
        var widefield = Data(count: 4 * plane)
        try widefield.withUnsafeMutableBytes { bytes in
            try reconstructor.widefield(geometry.frames, into: bytes.bindMemory(to: Float.self))
        }
        let output = SIMJob.Output(
            sr: sr, widefield: widefield, wienerAtCutoff: reconstructor.lastSpectralModel?.wienerAtCutoff)
        return output.item(sequence: item.sequence)
    }
}
