import Foundation
import MoireConfig
import MoireCore

/// Wire format v1: multipart `[topic][header JSON][payload]`, see docs/wire-format.md.
public enum Wire {
    public static let version = 1

    /// Topic of a frame: `<stream>.<channel>`.
    public static func topic(for header: FrameHeader) -> String { "\(header.stream).\(header.channel)" }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        do { return try encoder.encode(value) } catch {
            throw MoireError(.format, "cannot encode wire header: \(error)")
        }
    }

    /// Decodes a frame header, checking that the payload matches its shape.
    public static func decodeFrame(topic: String, header: Data, payloadBytes: Int) throws -> FrameHeader {
        let h: FrameHeader
        do { h = try JSONDecoder().decode(FrameHeader.self, from: header) } catch {
            throw MoireError(.format, "malformed frame header: \(describe(error))", place: "topic \(topic)")
        }
        guard h.width > 0, h.height > 0, h.width <= 65536, h.height <= 65536, (h.depth ?? 1) > 0,
            (h.depth ?? 1) <= 65536
        else {
            throw MoireError(
                .format, "frame header has an invalid shape \(h.width)×\(h.height)\(h.depth.map { "×\($0)" } ?? "")",
                place: "topic \(topic) seq \(h.seq)")
        }
        let expected = h.missing ? 0 : h.byteCount
        guard payloadBytes == expected else {
            throw MoireError(
                .format,
                "payload has \(payloadBytes) bytes; header says \(expected) (\(h.width)×\(h.height) \(h.pixel.rawValue)\(h.missing ? ", missing" : ""))",
                place: "topic \(topic) seq \(h.seq)")
        }
        return h
    }

    public static func describe(_ error: Error) -> String {
        if let e = error as? DecodingError {
            switch e {
            case .keyNotFound(let k, _): return "missing key '\(k.stringValue)'"
            case .typeMismatch(_, let c), .valueNotFound(_, let c):
                return "wrong type at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
            case .dataCorrupted(let c): return "not valid JSON (\(c.debugDescription))"
            @unknown default: return "\(e)"
            }
        }
        return "\(error)"
    }
}

/// The `start` lifecycle message: what a subscriber needs to interpret the frames of a run.
public struct RunStart: Codable, Sendable, Equatable {
    public var event = "start"
    public var wire = Wire.version
    public var run: String
    public var protocolName: String
    public var protocolFile: String
    public var mode: String
    public var rig: String
    public var objectiveNA: Double
    public var magnification: Double
    public var channels: [ChannelSpec]
    /// Planned shape: t, c, z, angles, phases, width, height.
    public var shape: [String: Int]
    public var pixel: PixelFormat
    public var pixelSizeUm: Double
    public var startedNs: Int64

    public init(
        run: String, protocolName: String, protocolFile: String, mode: String, rig: String, objectiveNA: Double,
        magnification: Double, channels: [ChannelSpec], shape: [String: Int], pixel: PixelFormat,
        pixelSizeUm: Double, startedNs: Int64
    ) {
        self.run = run; self.protocolName = protocolName; self.protocolFile = protocolFile; self.mode = mode
        self.rig = rig; self.objectiveNA = objectiveNA; self.magnification = magnification; self.channels = channels
        self.shape = shape; self.pixel = pixel; self.pixelSizeUm = pixelSizeUm; self.startedNs = startedNs
    }
}

/// The `stop` lifecycle message: why the run ended and what it produced.
public struct RunStop: Codable, Sendable, Equatable {
    public var event = "stop"
    public var run: String
    /// `completed`, `stopped`, `aborted`, or `fault`.
    public var reason: String
    public var error: String?
    public var frames: Int
    public var missing: Int
    public var planned: Int
    public var stoppedNs: Int64
    /// Of `missing`: frames lost because the camera's frame pool was exhausted (raw stream only).
    public var poolExhausted: Int?

    public init(
        run: String, reason: String, error: String?, frames: Int, missing: Int, planned: Int, stoppedNs: Int64,
        poolExhausted: Int? = nil
    ) {
        self.run = run; self.reason = reason; self.error = error; self.frames = frames; self.missing = missing
        self.planned = planned; self.stoppedNs = stoppedNs
        self.poolExhausted = poolExhausted
    }
}

/// Peeks at the `event` of a `run` message.
public struct RunEvent: Codable, Sendable { public var event: String; public var run: String }

/// A `run` lifecycle message, decoded once where it is read off a bus.
public enum RunMessage: Sendable, Equatable {
    case start(RunStart)
    case stop(RunStop)

    /// The run it belongs to.
    public var run: String {
        switch self {
        case .start(let start): return start.run
        case .stop(let stop): return stop.run
        }
    }

    /// Decodes a `run` message's JSON; a format error names what is wrong.
    public static func decode(_ json: Data) throws -> RunMessage {
        let decoder = JSONDecoder()
        guard let peek = try? decoder.decode(RunEvent.self, from: json) else {
            throw MoireError(.format, "malformed run message (no event and run)", place: "topic run")
        }
        do {
            switch peek.event {
            case "start": return .start(try decoder.decode(RunStart.self, from: json))
            case "stop": return .stop(try decoder.decode(RunStop.self, from: json))
            default:
                throw MoireError(.format, "unknown run event '\(peek.event.prefix(40))'", place: "topic run")
            }
        } catch let error as MoireError {
            throw error
        } catch {
            throw MoireError(.format, "malformed run \(peek.event) message: \(error)", place: "topic run")
        }
    }
}
