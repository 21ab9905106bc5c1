import Foundation
import MoireCore
import MoireDenoise
import MoireTransport

/// One raw frame's network inference to run elsewhere: the live denoiser keeps the adaptation, the
/// temporal context and the normalisation, and sends the network's input with the weights it is to
/// be run with. The job's parts: the tag `den`, this description, the weights file's bytes, and the
/// input (float32, the channels interleaved per pixel). The result: the network's output (float32,
/// one channel), which the stage turns back into ADU.
public struct DenoiseJob: Codable, Sendable {
    public var width: Int
    public var height: Int
    /// The network's input channels (1: the frame; 2: the frame and its temporal context).
    public var channels: Int
    public var weightsVersion: Int

    static let tag = Data("den".utf8)

    public init(width: Int, height: Int, channels: Int, weightsVersion: Int) {
        self.width = width
        self.height = height
        self.channels = channels
        self.weightsVersion = weightsVersion
    }

    public func item(weights: Data, input: [Float]) throws -> WorkItem {
        guard input.count == width * height * channels else {
            throw MoireError(.usage, "a denoise job of \(input.count) values, not \(width)×\(height)×\(channels)")
        }
        return WorkItem(
            sequence: 0,
            parts: [Self.tag, try JSONEncoder().encode(self), weights, input.withUnsafeBytes { Data($0) }])
    }

    /// Reads a result: the network's output for a frame of `width × height`.
    public static func output(of result: WorkItem, width: Int, height: Int) throws -> [Float] {
        guard result.parts.count == 1, result.parts[0].count == 4 * width * height else {
            throw MoireError(
                .format, "the denoised frame of job \(result.sequence) came back as \(result.parts.map(\.count)) bytes")
        }
        return result.parts[0].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
}

/// Runs denoise jobs (in a `moire worker`): one network per input kind, its weights reloaded only
/// when a job brings other ones. A job that does not describe itself consistently is refused.
// Sendable by hand: `networks` and `loaded` guarded by `lock`; one job at a time.
final class DenoiseWorkProcessor: @unchecked Sendable {
    private let lock = NSLock()
    private var networks: [Int: Denoiser] = [:]
    private var loaded: [Int: Data] = [:]

    func process(_ item: WorkItem) throws -> WorkItem {
        guard item.parts.count == 4 else {
            throw MoireError(.format, "denoise job \(item.sequence): \(item.parts.count) parts, expected 4")
        }
        let job = try JSONDecoder().decode(DenoiseJob.self, from: item.parts[1])
        guard (4...16384).contains(job.width), (4...16384).contains(job.height), job.width % 4 == 0,
            job.height % 4 == 0, let input = UNet.Input(rawValue: job.channels),
            item.parts[3].count == 4 * job.width * job.height * job.channels
        else {
            throw MoireError(
                .format,
                "denoise job \(item.sequence): \(job.width)×\(job.height)×\(job.channels), \(item.parts[3].count) bytes of input"
            )
        }
        lock.lock()
        defer { lock.unlock() }
        let denoiser: Denoiser
        if let made = networks[job.channels] {
            denoiser = made
        } else {
            // The noise model plays no part in the network's forward pass.
            denoiser = Denoiser(
                engine: try DNNLEngine(), model: NoiseModel(offset: 0, gain: 1, readVariance: 0), input: input)
            networks[job.channels] = denoiser
        }
        if loaded[job.channels] != item.parts[2] {
            try WeightsFile.load(data: item.parts[2], place: "denoise job \(item.sequence)", into: denoiser.net)
            loaded[job.channels] = item.parts[2]
        }
        let values = item.parts[3].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let output = try denoiser.networkOutput(input: values, width: job.width, height: job.height)
        return WorkItem(sequence: item.sequence, parts: [output.withUnsafeBytes { Data($0) }])
    }
}
