import Foundation
import MoireConfig
import MoireCore
import MoireFFT
import MoireReconstruction
import MoireTransport

extension WorkBroker {
    /// The broker for `reconstruction.workers`: loopback or ipc workers are this machine's; any
    /// other address needs the daemon's CURVE key and the workers' public keys (keys directory:
    /// `moired.key_secret`, `workers/*.key`).
    static func forReconstruction(_ options: LiveReconstructionSpec) throws -> WorkBroker? {
        try forWorkers(options.workers, endpoint: options.workEndpoint)
    }

    /// The broker for a stage's `workers` at `endpoint` (nil without workers).
    static func forWorkers(_ workers: WorkerCount?, endpoint: String) throws -> WorkBroker? {
        guard workers != nil else { return nil }
        var access = WorkAccess.local
        if endpoint.hasPrefix("tcp://"), EndpointRule.bindProblem(endpoint) != nil {
            let keys = CurveKeyFile.defaultDirectory
            access = .curve(
                server: try CurveKeyFile.readSecret(keys + "/moired.key_secret"),
                authorizedWorkers: try CurveKeyFile.readAllowList(keys + "/workers"))
        }
        let processor = SIMWorkProcessor()
        return try WorkBroker(endpoint: endpoint, access: access) { try processor.process($0) }
    }
}

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
            self = .ideal(na: ideal.na, emissionNm: ideal.emissionNm, attenuation: ideal.attenuation)
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
        let plane = width * height
        guard frames.allSatisfy({ $0.count == plane }) else {
            throw MoireError(.usage, "job \(sequence): frames of \(frames.map(\.count)) pixels, not \(width)×\(height)")
        }
        let pixels = Data.filled(byteCount: frames.count * plane * pixel.bytesPerPixel) { bytes in
            for (index, frame) in frames.enumerated() {
                frame.withUnsafeBufferPointer { source in
                    switch pixel {
                    case .float32:
                        let target = bytes.baseAddress!.assumingMemoryBound(to: Float.self) + index * plane
                        target.update(from: source.baseAddress!, count: plane)
                    case .uint16:
                        let target = bytes.baseAddress!.assumingMemoryBound(to: UInt16.self) + index * plane
                        for i in 0..<plane { target[i] = UInt16(Swift.max(0, Swift.min(65535, source[i].rounded()))) }
                    }
                }
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

/// One 3D-SIM stack to reconstruct elsewhere: the reconstructor's geometry and optics, the
/// parameters, and (as the job's third part) the phase stacks as uint16 camera counts, angle-major,
/// then phase, each `n × n × nz` (the first part is the tag `sim3d`).
public struct SIM3DJob: Codable, Sendable {
    public var n: Int
    public var nz: Int
    public var angles: Int
    public var phases: Int
    public var pixelUm: Double
    public var dzUm: Double
    public var na: Double
    public var immersionIndex: Double
    public var emissionNm: Double
    public var background: Double
    public var wiener: WienerParameter
    public var parameters: [SIM3DAngle]

    static let tag = Data("sim3d".utf8)

    /// `emissionNm`: the channel's, as the reconstructor's optics were made from it (the wavelength
    /// is derived from it on the worker the same way, so both reconstruct alike to the bit).
    public init(reconstructor: SIM3DReconstructor, phases: Int, emissionNm: Double, parameters: [SIM3DAngle]) {
        n = reconstructor.n
        nz = reconstructor.nz
        angles = parameters.count
        self.phases = phases
        pixelUm = reconstructor.pixelUm
        dzUm = reconstructor.dzUm
        na = reconstructor.optics.na
        immersionIndex = reconstructor.optics.immersionIndex
        self.emissionNm = emissionNm
        background = reconstructor.background
        wiener = reconstructor.wiener
        self.parameters = parameters
    }

    /// The work item: the tag, this description, then the phase stacks (`stacks[angle][phase]`).
    public func item(sequence: Int, stacks: [[[Float]]]) throws -> WorkItem {
        var counts = [UInt16]()
        counts.reserveCapacity(angles * phases * n * n * nz)
        for angle in stacks {
            for stack in angle {
                for value in stack { counts.append(UInt16(max(0, min(65535, value.rounded())))) }
            }
        }
        return WorkItem(
            sequence: sequence, parts: [Self.tag, try JSONEncoder().encode(self), counts.withUnsafeBytes { Data($0) }])
    }
}

/// Runs the jobs of workers — 2D-SIM sets, 3D-SIM stacks, light-sheet stacks (`LightSheetJob`) and
/// live denoising's network inference (`DenoiseJob`) — in a `moire worker`, or in process when no
/// worker is there, one reconstructor per geometry, kept. A job that does not describe itself
/// consistently (sizes, counts, parameters) is refused with what is wrong; the worker answers it
/// with an empty result.
// Sendable by hand: `reconstructors` guarded by `lock`; one job at a time (the lock is held while it runs).
public final class SIMWorkProcessor: @unchecked Sendable {
    private let lock = NSLock()
    /// A reconstructor, the frame buffers and the result buffers of one geometry.
    private final class Geometry {
        let reconstructor: SIM2DReconstructor
        var frames: [[Float]]
        /// SR and widefield results, reused once ZeroMQ has sent them.
        let srBuffers: RecycledBuffers
        let widefieldBuffers: RecycledBuffers
        init(reconstructor: SIM2DReconstructor, frames: [[Float]]) {
            self.reconstructor = reconstructor
            self.frames = frames
            let plane = reconstructor.width * reconstructor.height
            srBuffers = RecycledBuffers(byteCount: 16 * plane)
            widefieldBuffers = RecycledBuffers(byteCount: 4 * plane)
        }
    }
    private var reconstructors: [Data: Geometry] = [:]
    private var reconstructors3D: [Data: SIM3DReconstructor] = [:]
    /// Light-sheet stacks (deskew and deconvolution) go to their own processors.
    private let lightSheet = LightSheetWorkProcessor()
    /// Live denoising's network inference (`DenoiseJob`).
    private let denoising = DenoiseWorkProcessor()
    /// The last 2D job's description as sent, as read, and its geometry: sets of a run repeat it
    /// byte for byte while the parameters hold, and then it is not decoded again.
    private var lastJob: (description: Data, job: SIMJob, geometry: Geometry)?

    /// A 3D-SIM stack: the volume (float32, `2n × 2n × nz`, z slowest) comes back.
    private func process3D(_ item: WorkItem) throws -> WorkItem {
        let job = try JSONDecoder().decode(SIM3DJob.self, from: item.parts[1])
        guard (16...2048).contains(job.n), (2...512).contains(job.nz), (1...8).contains(job.angles),
            (3...16).contains(job.phases), job.parameters.count == job.angles
        else {
            throw MoireError(
                .format,
                "job \(item.sequence): \(job.n)² × \(job.nz), \(job.angles) × \(job.phases) is not a 3D-SIM stack")
        }
        let volume = job.n * job.n * job.nz
        guard item.parts[2].count == job.angles * job.phases * volume * 2 else {
            throw MoireError(.format, "job \(item.sequence): \(item.parts[2].count) bytes of stacks")
        }
        let stacks = item.parts[2].withUnsafeBytes { raw -> [[[Float]]] in
            let counts = raw.bindMemory(to: UInt16.self)
            return (0..<job.angles).map { angle in
                (0..<job.phases).map { phase in
                    let start = (angle * job.phases + phase) * volume
                    return (0..<volume).map { Float(counts[start + $0]) }
                }
            }
        }
        var key = job
        key.parameters = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let keyData = try encoder.encode(key)
        lock.lock()
        defer { lock.unlock() }
        let reconstructor: SIM3DReconstructor
        if let existing = reconstructors3D[keyData] {
            reconstructor = existing
        } else {
            reconstructor = try SIM3DReconstructor(
                n: job.n, nz: job.nz, pixelUm: job.pixelUm, dzUm: job.dzUm,
                optics: Widefield3D(na: job.na, immersionIndex: job.immersionIndex, emissionNm: job.emissionNm))
            reconstructor.background = job.background
            reconstructor.wiener = job.wiener
            reconstructors3D[keyData] = reconstructor
        }
        let result = try reconstructor.reconstruct(stacks, parameters: job.parameters)
        return WorkItem(sequence: item.sequence, parts: [result.withUnsafeBytes { Data($0) }])
    }

    public init() {}

    /// Reconstructors made so far (one per geometry).
    public var reconstructorCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return reconstructors.count
    }

    /// The job's result. `resultMemory`: a worker's memory shared with its broker, where a SIM
    /// set's SR and widefield frames are written when there is room (they then go back without a
    /// copy); otherwise, and in process, they are written in buffers of the geometry's own.
    public func process(_ item: WorkItem, resultMemory: WorkResultMemory? = nil) throws -> WorkItem {
        if item.parts.count == 3, item.parts[0] == SIM3DJob.tag { return try process3D(item) }
        if item.parts.count >= 3, item.parts[0] == LightSheetJob.tag { return try lightSheet.process(item) }
        if item.parts.count >= 3, item.parts[0] == DenoiseJob.tag { return try denoising.process(item) }
        guard item.parts.count == 2 else {
            throw MoireError(.format, "job \(item.sequence): \(item.parts.count) parts, expected 2")
        }
        lock.lock()
        defer { lock.unlock() }
        let job: SIMJob
        let geometry: Geometry
        if let last = lastJob, last.description == item.parts[0] {
            job = last.job
            geometry = last.geometry
        } else {
            job = try JSONDecoder().decode(SIMJob.self, from: item.parts[0])
            geometry = try self.geometry(of: job, sequence: item.sequence)
            lastJob = (item.parts[0], job, geometry)
        }
        let plane = job.width * job.height
        let frameCount = job.angles * job.phases
        let bytes = frameCount * plane * job.framePixel.bytesPerPixel
        guard item.parts[1].count == bytes else {
            throw MoireError(
                .format, "job \(item.sequence): \(item.parts[1].count) bytes of frames, expected \(bytes)")
        }
        // The frames into the geometry's buffers (no allocation per set).
        item.parts[1].withUnsafeBytes { raw in
            for frame in 0..<frameCount {
                geometry.frames[frame].withUnsafeMutableBufferPointer { destination in
                    let target = destination.baseAddress!
                    switch job.framePixel {
                    case .float32:
                        let source = raw.baseAddress!.assumingMemoryBound(to: Float.self) + frame * plane
                        target.update(from: source, count: plane)
                    case .uint16:
                        // Plain pointers and an index that cannot overflow: the loop vectorizes.
                        let source = raw.baseAddress!.assumingMemoryBound(to: UInt16.self) + frame * plane
                        for i in 0..<plane { target[i] = Float(source[i]) }
                    }
                }
            }
        }
        let reconstructor = geometry.reconstructor
        // Every value of both outputs is written: no zero fill needed.
        func writeSR(_ bytes: UnsafeMutableRawBufferPointer) throws {
            try reconstructor.reconstruct(
                geometry.frames, parameters: job.parameters, into: bytes.bindMemory(to: Float.self))
        }
        func writeWidefield(_ bytes: UnsafeMutableRawBufferPointer) throws {
            try reconstructor.widefield(geometry.frames, into: bytes.bindMemory(to: Float.self))
        }
        let sr =
            try resultMemory?.data(byteCount: geometry.srBuffers.byteCount, writeSR)
            ?? geometry.srBuffers.data(writeSR)
        let widefield =
            try resultMemory?.data(byteCount: geometry.widefieldBuffers.byteCount, writeWidefield)
            ?? geometry.widefieldBuffers.data(writeWidefield)
        let output = SIMJob.Output(
            sr: sr, widefield: widefield, wienerAtCutoff: reconstructor.lastSpectralModel?.wienerAtCutoff)
        return output.item(sequence: item.sequence)
    }

    /// The reconstructor and frame buffers for `job`'s geometry, made on first use (under `lock`).
    /// A job that does not describe a SIM set is refused.
    private func geometry(of job: SIMJob, sequence: Int) throws -> Geometry {
        guard (16...8192).contains(job.width), (16...8192).contains(job.height), (1...8).contains(job.angles),
            (3...16).contains(job.phases), job.parameters.angles.count == job.angles
        else {
            throw MoireError(
                .format,
                "job \(sequence): \(job.width)×\(job.height), \(job.angles) × \(job.phases) is not a SIM set")
        }
        let plane = job.width * job.height
        let frameCount = job.angles * job.phases
        var key = job
        key.parameters = SIMParameters(angles: [])
        // Sorted keys: the same geometry always gives the same bytes (the cache key).
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let keyData = try encoder.encode(key)
        if let existing = reconstructors[keyData] { return existing }
        let reconstructor = try SIM2DReconstructor(
            width: job.width, height: job.height, pixelUm: job.pixelUm, angles: job.angles, phases: job.phases,
            otf: try job.otf.make(), options: job.options, rigor: .fromWisdom)
        let made = Geometry(
            reconstructor: reconstructor,
            frames: [[Float]](repeating: [Float](repeating: 0, count: plane), count: frameCount))
        reconstructors[keyData] = made
        return made
    }
}

extension Data {
    /// `byteCount` bytes written by `fill`, which must write every one (they start undefined:
    /// no zero fill for outputs that are written whole).
    static func filled(byteCount: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Data {
        let start = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(byteCount, 1), alignment: 64)
        do {
            try fill(UnsafeMutableRawBufferPointer(start: start, count: byteCount))
        } catch {
            start.deallocate()
            throw error
        }
        return Data(bytesNoCopy: start, count: byteCount, deallocator: .custom { pointer, _ in pointer.deallocate() })
    }
}
