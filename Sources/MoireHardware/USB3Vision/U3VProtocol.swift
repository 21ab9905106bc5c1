import Foundation
import MoireCore

/// USB3 Vision wire formats (AIA USB3 Vision 1.x): the GenCP control channel's commands and
/// acknowledges, and the stream channel's leader and trailer. All little endian. Decoders check
/// every length against the bytes they are given and throw `MoireError(.format)` — random or
/// truncated bytes never crash them (fuzz test).
public enum U3V {
    public static let controlPrefix: UInt32 = 0x4356_3355  // "U3VC"
    public static let eventPrefix: UInt32 = 0x4556_3355  // "U3VE"
    public static let leaderPrefix: UInt32 = 0x4C56_3355  // "U3VL"
    public static let trailerPrefix: UInt32 = 0x5456_3355  // "U3VT"

    public static let readMemCmd: UInt16 = 0x0800, readMemAck: UInt16 = 0x0801
    public static let writeMemCmd: UInt16 = 0x0802, writeMemAck: UInt16 = 0x0803
    public static let pendingAck: UInt16 = 0x0805
    /// Command flag: the device must acknowledge.
    public static let flagAckRequired: UInt16 = 0x4000

    public static let payloadImage: UInt16 = 0x0001

    /// GenCP status codes (0: success).
    public static func statusText(_ s: UInt16) -> String {
        switch s {
        case 0x0000: return "success"
        case 0x8001: return "not implemented"
        case 0x8002: return "invalid parameter"
        case 0x8003: return "invalid address"
        case 0x8004: return "write protected"
        case 0x8005: return "bad alignment"
        case 0x8006: return "access denied"
        case 0x8007: return "busy"
        case 0x800B: return "message timeout"
        case 0x800E: return "invalid header"
        case 0x800F: return "wrong configuration"
        case 0xA001: return "resend not supported"
        case 0xA002: return "stream endpoint halted"
        case 0xA003: return "payload size not aligned"
        case 0xA004: return "stream registers inconsistent"
        case 0xA100: return "data discarded"
        default: return String(format: "status 0x%04X", s)
        }
    }

    /// Bootstrap register addresses used by the driver (ABRM at 0; SBRM and SIRM where the ABRM/SBRM point).
    public enum ABRM {
        public static let manufacturerName: UInt64 = 0x0004, modelName: UInt64 = 0x0044, serialNumber: UInt64 = 0x0144
        public static let maximumDeviceResponseTime: UInt64 = 0x01CC, manifestTableAddress: UInt64 = 0x01D0
        public static let sbrmAddress: UInt64 = 0x01D8
    }
    public enum SBRM {
        public static let maximumCommandTransferLength: UInt64 = 0x14, maximumAcknowledgeTransferLength: UInt64 = 0x18
        public static let sirmAddress: UInt64 = 0x20
    }
    public enum SIRM {
        public static let info: UInt64 = 0x00, control: UInt64 = 0x04, requiredPayloadSize: UInt64 = 0x08
        public static let requiredLeaderSize: UInt64 = 0x10, requiredTrailerSize: UInt64 = 0x14,
            maximumLeaderSize: UInt64 = 0x18
        public static let payloadTransferSize: UInt64 = 0x1C, payloadTransferCount: UInt64 = 0x20
        public static let payloadFinalTransfer1Size: UInt64 = 0x24, payloadFinalTransfer2Size: UInt64 = 0x28
        public static let maximumTrailerSize: UInt64 = 0x2C
    }
}

/// A bounds-checked little-endian reader over received bytes (drivers and their peers).
public struct LEReader {
    public let bytes: [UInt8]
    public var position = 0
    public let what: String
    public init(_ bytes: [UInt8], what: String) { self.bytes = bytes; self.what = what }

    public mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, position + n <= bytes.count else {
            throw MoireError(.format, "\(what): truncated (needs \(position + n) bytes, has \(bytes.count))")
        }
        defer { position += n }
        return bytes[position..<(position + n)]
    }
    public mutating func u16() throws -> UInt16 {
        let s = try take(2); return UInt16(s[s.startIndex]) | UInt16(s[s.startIndex + 1]) << 8
    }
    public mutating func u32() throws -> UInt32 {
        let s = try take(4); return s.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    public mutating func u64() throws -> UInt64 {
        let s = try take(8); return s.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// Appends little-endian integers.
extension Array where Element == UInt8 {
    public mutating func le<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}

/// A GenCP command (host → device).
public struct GenCPCommand: Sendable, Equatable {
    public var commandID: UInt16
    public var flags: UInt16
    public var requestID: UInt16
    /// Command-specific data.
    public var scd: [UInt8]

    public init(commandID: UInt16, requestID: UInt16, scd: [UInt8], ackRequired: Bool = true) {
        self.commandID = commandID; self.requestID = requestID; self.scd = scd
        flags = ackRequired ? U3V.flagAckRequired : 0
    }

    /// ReadMem: address u64, reserved u16, count u16.
    public static func readMem(address: UInt64, count: UInt16, requestID: UInt16) -> GenCPCommand {
        var scd: [UInt8] = []
        scd.le(address); scd.le(UInt16(0)); scd.le(count)
        return GenCPCommand(commandID: U3V.readMemCmd, requestID: requestID, scd: scd)
    }

    /// WriteMem: address u64, then the data.
    public static func writeMem(address: UInt64, data: [UInt8], requestID: UInt16) -> GenCPCommand {
        var scd: [UInt8] = []
        scd.le(address); scd += data
        return GenCPCommand(commandID: U3V.writeMemCmd, requestID: requestID, scd: scd)
    }

    /// prefix u32, flags u16, command id u16, scd length u16, request id u16, scd.
    public func encode() -> [UInt8] {
        var b: [UInt8] = []
        b.le(U3V.controlPrefix); b.le(flags); b.le(commandID); b.le(UInt16(scd.count)); b.le(requestID)
        return b + scd
    }

    /// Decodes a command (the device side, and the simulated peer).
    public static func decode(_ bytes: [UInt8]) throws -> GenCPCommand {
        var r = LEReader(bytes, what: "GenCP command")
        guard try r.u32() == U3V.controlPrefix else { throw MoireError(.format, "GenCP command: wrong prefix") }
        let flags = try r.u16()
        let id = try r.u16()
        let len = Int(try r.u16())
        let req = try r.u16()
        guard id % 2 == 0 else {
            throw MoireError(.format, String(format: "GenCP command: id 0x%04X is an acknowledge", id))
        }
        let scd = Array(try r.take(len))
        var c = GenCPCommand(commandID: id, requestID: req, scd: scd)
        c.flags = flags
        return c
    }
}

/// A GenCP acknowledge (device → host).
public struct GenCPAck: Sendable, Equatable {
    public var status: UInt16
    public var commandID: UInt16
    public var requestID: UInt16
    public var scd: [UInt8]

    public init(status: UInt16, commandID: UInt16, requestID: UInt16, scd: [UInt8]) {
        self.status = status; self.commandID = commandID; self.requestID = requestID; self.scd = scd
    }

    /// prefix u32, status u16, command id u16, scd length u16, request id u16, scd.
    public func encode() -> [UInt8] {
        var b: [UInt8] = []
        b.le(U3V.controlPrefix); b.le(status); b.le(commandID); b.le(UInt16(scd.count)); b.le(requestID)
        return b + scd
    }

    public static func decode(_ bytes: [UInt8]) throws -> GenCPAck {
        var r = LEReader(bytes, what: "GenCP acknowledge")
        guard try r.u32() == U3V.controlPrefix else { throw MoireError(.format, "GenCP acknowledge: wrong prefix") }
        let status = try r.u16()
        let id = try r.u16()
        let len = Int(try r.u16())
        let req = try r.u16()
        guard id % 2 == 1 else {
            throw MoireError(.format, String(format: "GenCP acknowledge: id 0x%04X is a command", id))
        }
        let ack = GenCPAck(status: status, commandID: id, requestID: req, scd: Array(try r.take(len)))
        if id == U3V.pendingAck { _ = try ack.pendingTimeoutMs() }
        if id == U3V.writeMemAck, status == 0, !ack.scd.isEmpty { _ = try ack.bytesWritten() }
        return ack
    }

    /// A pending acknowledge's new timeout: reserved u16, time to completion u16 (ms).
    public func pendingTimeoutMs() throws -> Int {
        var r = LEReader(scd, what: "pending acknowledge")
        _ = try r.u16()
        return Int(try r.u16())
    }

    /// A WriteMem acknowledge's count: reserved u16, bytes written u16.
    public func bytesWritten() throws -> Int {
        var r = LEReader(scd, what: "WriteMem acknowledge")
        _ = try r.u16()
        return Int(try r.u16())
    }
}

/// The stream leader of a block (one image).
public struct U3VLeader: Sendable, Equatable {
    public var blockID: UInt64
    public var payloadType: UInt16
    public var timestampNs: UInt64
    public var pixelFormat: UInt32
    public var sizeX: UInt32, sizeY: UInt32, offsetX: UInt32, offsetY: UInt32
    public var paddingX: UInt16

    public init(
        blockID: UInt64, timestampNs: UInt64, pixelFormat: UInt32, sizeX: UInt32, sizeY: UInt32,
        offsetX: UInt32 = 0, offsetY: UInt32 = 0, paddingX: UInt16 = 0
    ) {
        self.blockID = blockID; payloadType = U3V.payloadImage; self.timestampNs = timestampNs;
        self.pixelFormat = pixelFormat
        self.sizeX = sizeX; self.sizeY = sizeY; self.offsetX = offsetX; self.offsetY = offsetY; self.paddingX = paddingX
    }

    /// prefix u32, reserved u16, leader size u16, block id u64, reserved u16, payload type u16,
    /// then for images: timestamp u64, pixel format u32, size x/y u32, offset x/y u32, padding x u16, reserved u16.
    public func encode() -> [UInt8] {
        var b: [UInt8] = []
        b.le(U3V.leaderPrefix); b.le(UInt16(0)); b.le(UInt16(52)); b.le(blockID); b.le(UInt16(0)); b.le(payloadType)
        b.le(timestampNs); b.le(pixelFormat); b.le(sizeX); b.le(sizeY); b.le(offsetX); b.le(offsetY); b.le(paddingX);
        b.le(UInt16(0))
        return b
    }

    public static func decode(_ bytes: [UInt8]) throws -> U3VLeader {
        var r = LEReader(bytes, what: "stream leader")
        guard try r.u32() == U3V.leaderPrefix else { throw MoireError(.format, "stream leader: wrong prefix") }
        _ = try r.u16()
        let size = Int(try r.u16())
        guard size >= 20, size <= bytes.count else {
            throw MoireError(.format, "stream leader: size \(size) does not fit \(bytes.count) bytes")
        }
        let block = try r.u64()
        _ = try r.u16()
        let type = try r.u16()
        guard type == U3V.payloadImage else {
            throw MoireError(.format, String(format: "stream leader: payload type 0x%04X is not an image", type))
        }
        guard size >= 50 else {
            throw MoireError(.format, "stream leader: an image leader needs 50 bytes; size says \(size)")
        }
        var l = U3VLeader(
            blockID: block, timestampNs: try r.u64(), pixelFormat: try r.u32(), sizeX: try r.u32(), sizeY: try r.u32(),
            offsetX: try r.u32(), offsetY: try r.u32(), paddingX: try r.u16())
        l.payloadType = type
        return l
    }
}

/// The stream trailer of a block.
public struct U3VTrailer: Sendable, Equatable {
    public var blockID: UInt64
    public var status: UInt16
    public var validPayloadSize: UInt64
    public var sizeY: UInt32?

    public init(blockID: UInt64, status: UInt16 = 0, validPayloadSize: UInt64, sizeY: UInt32? = nil) {
        self.blockID = blockID; self.status = status; self.validPayloadSize = validPayloadSize; self.sizeY = sizeY
    }

    /// prefix u32, reserved u16, trailer size u16, block id u64, status u16, reserved u16, valid payload size u64, [size y u32].
    public func encode() -> [UInt8] {
        var b: [UInt8] = []
        b.le(U3V.trailerPrefix); b.le(UInt16(0)); b.le(UInt16(sizeY == nil ? 28 : 32)); b.le(blockID); b.le(status);
        b.le(UInt16(0))
        b.le(validPayloadSize)
        if let sizeY { b.le(sizeY) }
        return b
    }

    public static func decode(_ bytes: [UInt8]) throws -> U3VTrailer {
        var r = LEReader(bytes, what: "stream trailer")
        guard try r.u32() == U3V.trailerPrefix else { throw MoireError(.format, "stream trailer: wrong prefix") }
        _ = try r.u16()
        let size = Int(try r.u16())
        guard size >= 28, size <= bytes.count else {
            throw MoireError(.format, "stream trailer: size \(size) does not fit \(bytes.count) bytes")
        }
        let block = try r.u64()
        let status = try r.u16()
        _ = try r.u16()
        let valid = try r.u64()
        let sy: UInt32? = size >= 32 ? try r.u32() : nil
        return U3VTrailer(blockID: block, status: status, validPayloadSize: valid, sizeY: sy)
    }
}
