import Foundation
import MoireCore

/// The TI DLPC900 (DLP6500/DLP9000 boards) USB HID command format: 64-byte reports after a report
/// number 0; a header of flags (bit 7 read, bit 6 reply wanted, bit 5 nack in replies, bits 0–2
/// destination), a sequence byte, the length of command + data (u16 LE), then the command
/// (CMD2 << 8 | CMD3, u16 LE) and its data. Longer messages continue in further reports.
public enum DLPC900 {
    // 1 byte: 0 video, 1 pre-stored pattern, 2 video pattern, 3 pattern on the fly
    public static let displayMode: UInt16 = 0x1A1B
    public static let triggerOut1: UInt16 = 0x1A1D  // 5 bytes
    public static let patternStartStop: UInt16 = 0x1A24  // 1 byte: 0 stop, 1 pause, 2 start
    public static let lutConfigure: UInt16 = 0x1A31  // 6 bytes: entries u16, repeat u32
    public static let lutDefinition: UInt16 = 0x1A34  // 12 bytes: one pattern of the look-up table
    public static let triggerIn1: UInt16 = 0x1A35  // 3 bytes
    public static let mainStatus: UInt16 = 0x1A0C  // read: 1 byte (bit 0 mirrors parked, bit 1 sequencer running)
    public static let patternLoadInit: UInt16 = 0x1A2A  // image index u16, byte count u32 (header + encoded image)
    public static let patternLoadData: UInt16 = 0x1A2B  // byte count u16, then up to 504 bytes of the image
    public static let validate: UInt16 = 0x1A1A  // read: 1 byte of error bits (0: the table is valid)

    public static let flagRead: UInt8 = 0x80, flagReply: UInt8 = 0x40, flagNack: UInt8 = 0x20
    public static let reportSize = 64

    /// One message: header and command with its data.
    public struct Message: Sendable, Equatable {
        public var flags: UInt8
        public var sequence: UInt8
        public var command: UInt16
        public var data: [UInt8]
        public init(flags: UInt8, sequence: UInt8, command: UInt16, data: [UInt8]) {
            self.flags = flags; self.sequence = sequence; self.command = command; self.data = data
        }
        public static func write(_ command: UInt16, _ data: [UInt8], sequence: UInt8) -> Message {
            Message(flags: flagReply, sequence: sequence, command: command, data: data)
        }
        public var isNack: Bool { flags & flagNack != 0 }

        /// The message as HID reports of 65 bytes (report number 0 + 64), zero-padded.
        public func reports() -> [[UInt8]] {
            var body: [UInt8] = [flags, sequence]
            body.le(UInt16(data.count + 2)); body.le(command); body += data
            var out: [[UInt8]] = []
            var i = 0
            repeat {
                var r: [UInt8] = [0] + body[i..<min(body.count, i + reportSize)]
                r += [UInt8](repeating: 0, count: reportSize + 1 - r.count)
                out.append(r)
                i += reportSize
            } while i < body.count
            return out
        }

        /// Decodes a message from reports (each 65 bytes with the report number, or 64 without).
        public static func decode(_ reports: [[UInt8]]) throws -> Message {
            guard let first = reports.first else { throw MoireError(.format, "DLPC900: no report") }
            let strip: ([UInt8]) -> ArraySlice<UInt8> = { $0.count == reportSize + 1 ? $0[1...] : $0[...] }
            let body = reports.map(strip).reduce(into: [UInt8]()) { $0 += $1 }
            var r = LEReader(body, what: "DLPC900 message")
            let flags = try r.take(1).first!
            let seq = try r.take(1).first!
            let length = Int(try r.u16())
            guard strip(first).count >= 4 else { throw MoireError(.format, "DLPC900 message: header truncated") }
            guard length >= 2 else { throw MoireError(.format, "DLPC900 message: length \(length) leaves no command") }
            let command = try r.u16()
            let data = Array(try r.take(length - 2))
            return Message(flags: flags, sequence: seq, command: command, data: data)
        }
    }

    /// One entry of the pattern look-up table (the 12 data bytes of 0x1A34): index, exposure (µs,
    /// 24 bit), options (bit 0 clear after exposure, bits 1–3 bit depth − 1, bits 4–6 colour,
    /// bit 7 wait for trigger), dark time (µs, 24 bit), trigger out 2 disabled, image index (11 bit)
    /// and bit position (5 bit) in the pattern memory.
    public struct LUTEntry: Sendable, Equatable {
        public var index: UInt16, exposureUs: UInt32, clearAfter: Bool, bitDepth: Int, color: Int, waitForTrigger: Bool
        public var darkUs: UInt32, disableTriggerOut2: Bool, imageIndex: UInt16, bitPosition: UInt8

        public init(
            index: UInt16, exposureUs: UInt32, bitDepth: Int = 1, color: Int = 7, waitForTrigger: Bool,
            darkUs: UInt32 = 0,
            imageIndex: UInt16, bitPosition: UInt8, clearAfter: Bool = true, disableTriggerOut2: Bool = false
        ) {
            self.index = index; self.exposureUs = exposureUs; self.clearAfter = clearAfter; self.bitDepth = bitDepth;
            self.color = color
            self.waitForTrigger = waitForTrigger; self.darkUs = darkUs; self.disableTriggerOut2 = disableTriggerOut2
            self.imageIndex = imageIndex; self.bitPosition = bitPosition
        }

        public func encode() -> [UInt8] {
            var b: [UInt8] = []
            b.le(index)
            b += [UInt8(exposureUs & 0xFF), UInt8(exposureUs >> 8 & 0xFF), UInt8(exposureUs >> 16 & 0xFF)]
            b.append(
                (clearAfter ? 1 : 0) | UInt8((bitDepth - 1) & 7) << 1 | UInt8(color & 7) << 4
                    | (waitForTrigger ? 0x80 : 0))
            b += [UInt8(darkUs & 0xFF), UInt8(darkUs >> 8 & 0xFF), UInt8(darkUs >> 16 & 0xFF)]
            b.append(disableTriggerOut2 ? 1 : 0)
            let img = imageIndex & 0x7FF
            b.append(UInt8(img & 0xFF))
            b.append(UInt8(img >> 8) | (bitPosition & 0x1F) << 3)
            return b
        }

        public static func decode(_ d: [UInt8]) throws -> LUTEntry {
            guard d.count == 12 else { throw MoireError(.format, "DLPC900 LUT entry: \(d.count) bytes; 12 expected") }
            let exp = UInt32(d[2]) | UInt32(d[3]) << 8 | UInt32(d[4]) << 16
            let dark = UInt32(d[6]) | UInt32(d[7]) << 8 | UInt32(d[8]) << 16
            return LUTEntry(
                index: UInt16(d[0]) | UInt16(d[1]) << 8, exposureUs: exp, bitDepth: Int(d[5] >> 1 & 7) + 1,
                color: Int(d[5] >> 4 & 7),
                waitForTrigger: d[5] & 0x80 != 0, darkUs: dark, imageIndex: UInt16(d[10]) | UInt16(d[11] & 7) << 8,
                bitPosition: d[11] >> 3, clearAfter: d[5] & 1 != 0, disableTriggerOut2: d[9] & 1 != 0)
        }
    }
}
