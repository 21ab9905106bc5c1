import Foundation
import MoireConfig
import MoireCore

/// What a DLPC900 driver talks through: HID reports of 65 bytes (report number 0 + 64) out, 64 or
/// 65 bytes back. libusb's interrupt endpoints and the simulated controller implement it.
public protocol HIDTransport: AnyObject, Sendable {
    func write(report: [UInt8], timeoutMs: Int) throws
    /// The next report, or nil when none came within `timeoutMs`.
    func read(timeoutMs: Int) throws -> [UInt8]?
}

/// Command/reply exchange with a DLPC900: a sequence byte per message (1…255), every message asks
/// for a reply; the reply of that sequence is awaited within the timeout (replies of other
/// sequences are late answers and skipped); a nack is an error naming the command.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class DLPC900Channel: @unchecked Sendable {
    let transport: HIDTransport
    public var timeoutMs: Int
    private var sequence: UInt8 = 0
    private let lock = NSLock()

    public init(transport: HIDTransport, timeoutMs: Int = 500) {
        self.transport = transport; self.timeoutMs = timeoutMs
    }

    static func name(_ command: UInt16) -> String { String(format: "0x%04X", command) }

    /// Sends a write command that asks for no reply (bulk data: pattern upload).
    public func post(_ command: UInt16, _ data: [UInt8]) throws {
        lock.lock(); defer { lock.unlock() }
        try send(DLPC900.Message(flags: 0, sequence: nextSequence(), command: command, data: data))
    }

    /// The next sequence byte (1…255; the lock is held).
    private func nextSequence() -> UInt8 {
        sequence = sequence == 255 ? 1 : sequence + 1
        return sequence
    }

    private func send(_ m: DLPC900.Message) throws {
        for r in m.reports() { try transport.write(report: r, timeoutMs: timeoutMs) }
    }

    /// Sends a write (or, with `read`, a read) command and returns the reply's data.
    @discardableResult
    public func call(_ command: UInt16, _ data: [UInt8], read: Bool = false) throws -> [UInt8] {
        lock.lock(); defer { lock.unlock() }
        let seq = nextSequence()
        var m = DLPC900.Message.write(command, data, sequence: seq)
        if read { m.flags |= DLPC900.flagRead }
        try send(m)
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < end else {
                throw MoireError(
                    .deadline, "no reply to command \(Self.name(command)) within \(timeoutMs) ms", place: "DLPC900")
            }
            guard let first = try transport.read(timeoutMs: Int((end - now) / 1_000_000) + 1) else { continue }
            // A reply longer than one report continues in the next ones.
            var reports = [first]
            let body = first.count == DLPC900.reportSize + 1 ? Array(first.dropFirst()) : first
            if body.count >= 4 {
                let total = 4 + Int(UInt16(body[2]) | UInt16(body[3]) << 8)
                while reports.count * DLPC900.reportSize < total {
                    guard let more = try transport.read(timeoutMs: timeoutMs) else {
                        throw MoireError(.format, "reply to \(Self.name(command)) truncated", place: "DLPC900")
                    }
                    reports.append(more)
                }
            }
            let reply: DLPC900.Message
            do { reply = try DLPC900.Message.decode(reports) } catch let e as MoireError {
                throw MoireError(.format, "bad reply to \(Self.name(command)): \(e.message)", place: "DLPC900")
            }
            guard reply.sequence == seq else { continue }
            guard !reply.isNack else {
                throw MoireError(
                    .hardware, "the controller refused command \(Self.name(command)) (nack)", place: "DLPC900")
            }
            return reply.data
        }
    }
}

/// The DLPC900 modulator driver (DLP6500/DLP9000 boards) in pre-stored pattern mode — or, when the
/// profile's `dmd_geometry` says `upload`, pattern-on-the-fly mode with every pattern's binary
/// grating generated and uploaded when the driver opens: the profile maps every pattern of its
/// pattern sets to an image index and bit plane of the controller's pattern memory
/// (`dmd: [image, bit]`) and names the all-on image (`dmd_uniform`). Showing one
/// pattern is a one-entry look-up table repeated; a sequence is a table of one entry per step
/// (exposure, dark time = camera readout, trigger out per pattern to the camera), run once. Idle is
/// the sequencer stopped.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class DLPC900Modulator: Modulator, @unchecked Sendable {
    public let name: String
    public let profile: ModulatorProfile
    let channel: DLPC900Channel
    private let lock = NSLock()
    private var active = false
    private var uploaded: [SequenceStep] = []

    /// Main status (0x1A0C) bit: the sequencer is running.
    public static let statusSequencerRunning: UInt8 = 0x02
    /// Bytes of image data per 0x1A2B message.
    public static let uploadChunk = 504
    /// Display mode: 1 pre-stored, 3 pattern on the fly (uploaded).
    let displayMode: UInt8
    /// Encoded bytes uploaded per image index (when patterns are uploaded).
    public private(set) var uploadedBytes: [Int: Int] = [:]

    public init(name: String, profile: ModulatorProfile, transport: HIDTransport, timeoutMs: Int = 500) throws {
        self.name = name; self.profile = profile
        channel = DLPC900Channel(transport: transport, timeoutMs: timeoutMs)
        displayMode = profile.dmdGeometry?.upload == true ? 3 : 1
        try guarded {
            _ = try channel.call(DLPC900.mainStatus, [], read: true)
            try channel.call(DLPC900.patternStartStop, [0])
            try channel.call(DLPC900.displayMode, [displayMode])
            // Trigger out 1 (to the camera): not inverted, no rising/falling-edge delay.
            try channel.call(DLPC900.triggerOut1, [0, 0, 0, 0, 0])
            // Trigger in 1: no delay, rising edge (for tables whose entries wait for a trigger).
            try channel.call(DLPC900.triggerIn1, [0, 0, 0])
            if let g = profile.dmdGeometry, g.upload { try uploadPatterns(g) }
        }
    }

    /// Generates the gratings of every pattern (and the all-on image), packs them 24 to an image,
    /// and uploads each image ERLE-encoded (0x1A2A, then 0x1A2B chunks), the last image first as the
    /// controller expects; the controller's validation then covers the uploaded images too.
    private func uploadPatterns(_ g: DMDGeometry) throws {
        for (index, pixels) in DMDPatterns.images(for: profile, geometry: g).sorted(by: { $0.key > $1.key }) {
            let encoded = DMDPatterns.encodeERLE(pixels, width: g.width, height: g.height)
            let data = DMDPatterns.header(width: g.width, height: g.height, encodedBytes: encoded.count) + encoded
            var initData: [UInt8] = []
            initData.le(UInt16(index)); initData.le(UInt32(data.count))
            try channel.call(DLPC900.patternLoadInit, initData)
            var off = 0
            while off < data.count {
                let n = min(Self.uploadChunk, data.count - off)
                var chunk: [UInt8] = []
                chunk.reserveCapacity(n + 2)
                chunk.le(UInt16(n)); chunk += data[off..<(off + n)]
                try channel.post(DLPC900.patternLoadData, chunk)
                off += n
            }
            uploadedBytes[index] = encoded.count
        }
    }

    private func dmd(_ pattern: Int) throws -> DMDImage {
        if pattern == -1, let u = profile.uniformDMD { return u }
        guard let p = profile.pattern(index: pattern), let d = p.dmd else {
            throw MoireError(
                .hardware, "pattern \(pattern) has no DMD image in the profile", place: "modulator \(name)")
        }
        return d
    }

    private func guarded<R>(_ body: () throws -> R) throws -> R {
        do { return try body() } catch let e as MoireError {
            throw MoireError(e.kind, e.message, place: "modulator \(name) (DLPC900)")
        }
    }

    /// Loads a table (stop, entries, configuration, validation).
    private func load(_ entries: [DLPC900.LUTEntry], repeatCount: UInt32) throws {
        try channel.call(DLPC900.patternStartStop, [0])
        try channel.call(DLPC900.displayMode, [displayMode])
        for e in entries { try channel.call(DLPC900.lutDefinition, e.encode()) }
        var cfg: [UInt8] = []
        cfg.le(UInt16(entries.count)); cfg.le(repeatCount)
        try channel.call(DLPC900.lutConfigure, cfg)
        let v = try channel.call(DLPC900.validate, [], read: true)
        guard let status = v.first, status & 0x0F == 0 else {
            throw MoireError(
                .hardware,
                "the controller rejected the pattern table (validation status \(v.first.map { String(format: "0x%02X", $0) } ?? "none"))"
            )
        }
    }

    public func show(pattern: Int) throws {
        try guarded {
            let d = try dmd(pattern)
            // A long exposure repeated forever: the pattern stays on.
            let e = DLPC900.LUTEntry(
                index: 0, exposureUs: 100_000, waitForTrigger: false, imageIndex: UInt16(d.image),
                bitPosition: UInt8(d.bit),
                clearAfter: false, disableTriggerOut2: true)
            try load([e], repeatCount: 0)
            try channel.call(DLPC900.patternStartStop, [2])
        }
        lock.lock(); active = true; lock.unlock()
        Thread.sleep(forTimeInterval: profile.settleMs / 1000)
    }

    public func upload(_ steps: [SequenceStep]) throws {
        guard steps.count <= profile.sequenceMax else {
            throw MoireError(
                .hardware, "sequence of \(steps.count) steps exceeds the maximum \(profile.sequenceMax)",
                place: "modulator \(name)")
        }
        try guarded {
            let entries = try steps.enumerated().map { i, s -> DLPC900.LUTEntry in
                let d = try dmd(s.pattern)
                let exp = UInt32(min(0xFF_FFFF, (s.exposureMs * 1000).rounded()))
                let dark = UInt32(min(0xFF_FFFF, ((s.readoutMs + profile.settleMs) * 1000).rounded()))
                return DLPC900.LUTEntry(
                    index: UInt16(i), exposureUs: exp, waitForTrigger: false, darkUs: dark,
                    imageIndex: UInt16(d.image), bitPosition: UInt8(d.bit))
            }
            try load(entries, repeatCount: 1)
        }
        lock.lock(); uploaded = steps; lock.unlock()
    }

    /// Starts the table; the controller's trigger out starts each camera exposure (rig wiring).
    public func startSequence(camera: Camera, lasers: [String: Laser]) throws {
        try guarded { try channel.call(DLPC900.patternStartStop, [2]) }
        lock.lock(); active = true; lock.unlock()
    }

    public func waitSequence(timeoutMs: Int) throws -> Bool {
        lock.lock(); let steps = uploaded; lock.unlock()
        // Expected duration first, then the controller's status until the sequencer stops.
        let expected = steps.reduce(0.0) { $0 + $1.exposureMs + $1.readoutMs + profile.settleMs }
        let end = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        Thread.sleep(forTimeInterval: min(expected, Double(timeoutMs)) / 1000 * 0.9)
        while Date() < end {
            let s = try guarded { try channel.call(DLPC900.mainStatus, [], read: true) }
            guard let b = s.first else {
                throw MoireError(.format, "empty main status reply", place: "modulator \(name)")
            }
            if b & Self.statusSequencerRunning == 0 { return true }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return false
    }

    public func idle() {
        _ = try? channel.call(DLPC900.patternStartStop, [0])
        lock.lock(); active = false; lock.unlock()
    }

    public var isIdle: Bool { lock.lock(); defer { lock.unlock() }; return !active }
}
