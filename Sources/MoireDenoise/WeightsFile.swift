import Foundation
import MoireCore

/// The versioned weights file: `MOIREWTS` magic, u32 format version (1), u32 header length, a JSON
/// header (architecture, weights version, tensor names and shapes), then every tensor as
/// little-endian float32 in header order.
public enum WeightsFile {
    static let magic = Array("MOIREWTS".utf8)
    public static let formatVersion: UInt32 = 1

    public struct Header: Codable, Sendable, Equatable {
        public var architecture: String
        /// Increases with every adaptation step that changed the weights (names the weights that made a frame).
        public var weightsVersion: Int
        public var tensors: [Entry]
        public struct Entry: Codable, Sendable, Equatable { public var name: String; public var shape: [Int] }
    }

    public static func save(_ net: UNet, weightsVersion: Int, to path: String) throws {
        let d = try encode(net, weightsVersion: weightsVersion)
        do { try d.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw MoireError(.io, "cannot write weights: \(error.localizedDescription)", place: path)
        }
    }

    /// The weights file's bytes for `net`.
    public static func encode(_ net: UNet, weightsVersion: Int) throws -> Data {
        var entries: [Header.Entry] = []
        for (i, c) in net.convs.enumerated() {
            entries.append(.init(name: "conv\(i).weight", shape: c.weights.shape))
            entries.append(.init(name: "conv\(i).bias", shape: [c.outChannels]))
        }
        let json = try JSONEncoder().encode(
            Header(architecture: net.architecture, weightsVersion: weightsVersion, tensors: entries))
        var d = Data(magic)
        withUnsafeBytes(of: formatVersion.littleEndian) { d.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(json)
        for c in net.convs {
            for t in [c.weights, c.bias] {
                for i in 0..<t.count { withUnsafeBytes(of: t[i].bitPattern.littleEndian) { d.append(contentsOf: $0) } }
            }
        }
        return d
    }

    /// The file's bytes and its validated header.
    static func read(_ path: String) throws -> (header: Header, data: Data, dataOffset: Int) {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw MoireError(.io, "cannot read weights file", place: path)
        }
        return try parse(d, place: path)
    }

    /// The validated header of weights file bytes `d` (`place` names them in errors).
    static func parse(_ d: Data, place path: String) throws -> (header: Header, data: Data, dataOffset: Int) {
        guard d.count >= 16, Array(d.prefix(8)) == magic else {
            throw MoireError(.format, "not a Moiré weights file", place: path)
        }
        func u32(_ o: Int) -> UInt32 {
            d.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        }
        let version = u32(8)
        let hlen = Int(u32(12))
        guard version == formatVersion else {
            throw MoireError(
                .format, "weights file format version \(version); this Moiré reads version \(formatVersion)",
                place: path)
        }
        guard d.count >= 16 + hlen,
            let header = try? JSONDecoder().decode(Header.self, from: d.subdata(in: 16..<(16 + hlen)))
        else {
            throw MoireError(.format, "weights file header is damaged", place: path)
        }
        return (header, d, 16 + hlen)
    }

    /// Loads weights into `net`; a file of another format version, architecture or shape is refused.
    @discardableResult
    public static func load(_ path: String, into net: UNet) throws -> Header {
        try load(parsed: try read(path), place: path, into: net)
    }

    /// Loads weights file bytes into `net` (`place` names them in errors).
    @discardableResult
    public static func load(data: Data, place: String, into net: UNet) throws -> Header {
        try load(parsed: try parse(data, place: place), place: place, into: net)
    }

    static func load(parsed: (header: Header, data: Data, dataOffset: Int), place path: String, into net: UNet) throws
        -> Header
    {
        let (header, d, dataOffset) = parsed
        guard header.architecture == net.architecture else {
            throw MoireError(
                .format, "weights are for '\(header.architecture)'; this network is '\(net.architecture)'", place: path)
        }
        let expected = net.convs.enumerated().flatMap { i, c in [(c.weights.shape), [c.outChannels]] }
        guard header.tensors.map(\.shape) == expected else {
            throw MoireError(.format, "weights file tensor shapes do not match the network", place: path)
        }
        let total = expected.map { $0.reduce(1, *) }.reduce(0, +)
        guard d.count == dataOffset + 4 * total else {
            throw MoireError(
                .format, "weights file holds \(d.count - dataOffset) bytes of data; expected \(4 * total)", place: path)
        }
        var o = dataOffset
        d.withUnsafeBytes { b in
            for c in net.convs {
                for t in [c.weights, c.bias] {
                    for i in 0..<t.count {
                        t[i] = Float(
                            bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
                        o += 4
                    }
                }
            }
        }
        return header
    }
}

/// The starting models every camera-frame denoiser loads unless told otherwise, one per network
/// input: trained by `moire train` on the project's own simulated time-lapses (models/README.md says
/// how to reproduce them), with temporal context and on single frames.
public enum ShippedModel {
    /// The name a frame header or a log line gives the starting weights of a network with `input`.
    public static func name(for input: UNet.Input) -> String {
        "shipped:\(embedded(for: input).sha256.prefix(12))"
    }

    /// The weights file's bytes of the model for `input`.
    public static func bytes(for input: UNet.Input) -> Data {
        Data(base64Encoded: embedded(for: input).base64, options: .ignoreUnknownCharacters) ?? Data()
    }

    /// What `models/embed.py` wrote into the source for `input`'s model.
    private static func embedded(for input: UNet.Input) -> (sha256: String, base64: String) {
        switch input {
        case .frame: return (ShippedSingleFrameModelData.sha256, ShippedSingleFrameModelData.base64)
        case .frameAndHistory: return (ShippedTemporalModelData.sha256, ShippedTemporalModelData.base64)
        }
    }

    /// Loads the starting model for `net`'s input into it.
    public static func load(into net: UNet) throws {
        try WeightsFile.load(data: bytes(for: net.input), place: name(for: net.input), into: net)
    }
}
