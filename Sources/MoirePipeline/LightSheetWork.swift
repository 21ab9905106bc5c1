import Foundation
import MoireCore
import MoireReconstruction
import MoireTransport

/// One light-sheet stack to deskew and deconvolve elsewhere. The job's parts: the tag `llsm`, this
/// description, the planes (float32, `width × height` each, z slowest: raw counts or the live
/// denoiser's planes, exact either way), and with a measured PSF its voxels (float32, x fastest).
/// The result: the volume's shape (`LightSheetJob.Shape`, JSON) and its voxels (float32).
public struct LightSheetJob: Codable, Sendable {
    public var width: Int
    public var height: Int
    public var depth: Int
    public var angleDeg: Double
    public var stepUm: Double
    public var pixelUm: Double
    public var iterations: Int
    public var background: Float?
    /// Turn the volume into the coverslip frame.
    public var rotate: Bool
    /// Planes that did not come (filled with the stack's background).
    public var missing: [Int]
    /// The PSF: the model of these optics, or (nil) the measured one in the job's fourth part.
    public var optics: LightSheetOptics?
    /// A measured PSF's width, height and depth, and its voxel (µm).
    public var measuredShape: [Int]?
    public var measuredVoxelUm: [Double]?

    static let tag = Data("llsm".utf8)

    public init(
        width: Int, height: Int, depth: Int, angleDeg: Double, stepUm: Double, pixelUm: Double, iterations: Int,
        background: Float?, rotate: Bool, missing: [Int], optics: LightSheetOptics?
    ) {
        self.width = width
        self.height = height
        self.depth = depth
        self.angleDeg = angleDeg
        self.stepUm = stepUm
        self.pixelUm = pixelUm
        self.iterations = iterations
        self.background = background
        self.rotate = rotate
        self.missing = missing
        self.optics = optics
    }

    /// The shape of a volume that comes back.
    public struct Shape: Codable, Sendable, Equatable {
        public var width: Int
        public var height: Int
        public var depth: Int
        public var voxelUm: [Double]
    }

    /// The work item for `planes` (`missing`: those that did not come).
    public func item(planes: [[Float]], measuredPSF: Volume?) throws -> WorkItem {
        let plane = width * height
        guard planes.count == depth, planes.allSatisfy({ $0.count == plane }) else {
            throw MoireError(.usage, "a light-sheet job of \(planes.count) planes, not \(depth) of \(width)×\(height)")
        }
        var parts = [Self.tag, try JSONEncoder().encode(self)]
        var bytes = Data(capacity: depth * plane * 4)
        for p in planes { p.withUnsafeBytes { bytes.append(contentsOf: $0) } }
        parts.append(bytes)
        if let measuredPSF { parts.append(measuredPSF.data.withUnsafeBytes { Data($0) }) }
        return WorkItem(sequence: 0, parts: parts)
    }

    /// Reads a result, checking its size against its shape.
    public static func volume(of result: WorkItem) throws -> Volume {
        guard result.parts.count == 2 else {
            throw MoireError(.format, "the volume of stack \(result.sequence) came back in \(result.parts.count) parts")
        }
        let shape = try JSONDecoder().decode(Shape.self, from: result.parts[0])
        guard shape.width > 0, shape.height > 0, shape.depth > 0, shape.voxelUm.count == 3,
            result.parts[1].count == 4 * shape.width * shape.height * shape.depth
        else {
            throw MoireError(.format, "the volume of stack \(result.sequence) came back with the wrong size")
        }
        let data = result.parts[1].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return Volume(
            width: shape.width, height: shape.height, depth: shape.depth, data: data,
            voxelUm: (shape.voxelUm[0], shape.voxelUm[1], shape.voxelUm[2]))
    }
}

/// Deskews and deconvolves light-sheet jobs (in a `moire worker`), one processor per geometry and
/// PSF, kept. A job that does not describe itself consistently is refused with what is wrong.
// Sendable by hand: `processors` guarded by `lock`; one job at a time (the lock is held while it runs).
final class LightSheetWorkProcessor: @unchecked Sendable {
    private let lock = NSLock()
    private var processors: [Data: LightSheetProcessor] = [:]

    func process(_ item: WorkItem) throws -> WorkItem {
        guard item.parts.count == 3 || item.parts.count == 4 else {
            throw MoireError(.format, "light-sheet job \(item.sequence): \(item.parts.count) parts, expected 3 or 4")
        }
        let job = try JSONDecoder().decode(LightSheetJob.self, from: item.parts[1])
        let plane = job.width * job.height
        guard (8...8192).contains(job.width), (8...8192).contains(job.height), (2...4096).contains(job.depth),
            (0...1000).contains(job.iterations), job.missing.allSatisfy({ (0..<job.depth).contains($0) }),
            job.missing.count < job.depth, item.parts[2].count == 4 * plane * job.depth
        else {
            throw MoireError(
                .format,
                "light-sheet job \(item.sequence): \(job.width)×\(job.height)×\(job.depth), \(item.parts[2].count) bytes of planes"
            )
        }
        let geometry = try LightSheetGeometry(angleDeg: job.angleDeg, stepUm: job.stepUm, pixelUm: job.pixelUm)
        let psf = try Self.psf(of: job, item: item)
        var key = job
        key.missing = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let keyData = try encoder.encode(key) + (item.parts.count == 4 ? item.parts[3] : Data())
        let planes = item.parts[2].withUnsafeBytes { raw -> [[Float]] in
            let values = raw.bindMemory(to: Float.self)
            return (0..<job.depth).map { z in Array(values[(z * plane)..<((z + 1) * plane)]) }
        }
        lock.lock()
        defer { lock.unlock() }
        let processor: LightSheetProcessor
        if let made = processors[keyData] {
            processor = made
        } else {
            processor = LightSheetProcessor(
                geometry: geometry, iterations: job.iterations, background: job.background, rigor: .fromWisdom
            ) { voxel in try psf(voxel) }
            processors[keyData] = processor
        }
        var volume = try processor.process(
            planes: planes, width: job.width, height: job.height, missing: Set(job.missing)
        ).volume
        if job.rotate { volume = CoverslipRotation.apply(volume, angleDeg: geometry.angleDeg) }
        let shape = LightSheetJob.Shape(
            width: volume.width, height: volume.height, depth: volume.depth,
            voxelUm: [volume.voxelUm.x, volume.voxelUm.y, volume.voxelUm.z])
        return WorkItem(
            sequence: item.sequence,
            parts: [try JSONEncoder().encode(shape), volume.data.withUnsafeBytes { Data($0) }])
    }

    /// The job's PSF for a deskewed voxel: the model of its optics (checked), or its measured one.
    private static func psf(of job: LightSheetJob, item: WorkItem) throws -> (
        (x: Double, y: Double, z: Double)
    ) throws -> Volume {
        if let optics = job.optics {
            let checked = try LightSheetOptics(
                na: optics.na, immersionIndex: optics.immersionIndex, emissionNm: optics.emissionNm,
                sheetThicknessUm: optics.sheetThicknessUm)
            return { LightSheetPSF.model(checked, voxelUm: $0) }
        }
        guard item.parts.count == 4, let shape = job.measuredShape, shape.count == 3,
            shape.allSatisfy({ (1...1024).contains($0) }), let voxel = job.measuredVoxelUm, voxel.count == 3,
            item.parts[3].count == 4 * shape[0] * shape[1] * shape[2]
        else {
            throw MoireError(.format, "light-sheet job \(item.sequence): no PSF model and no measured PSF of its size")
        }
        let data = item.parts[3].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let measured = Volume(
            width: shape[0], height: shape[1], depth: shape[2], data: data, voxelUm: (voxel[0], voxel[1], voxel[2]))
        return { _ in measured }
    }
}
