import DequeModule
import Foundation
import MoireCore

/// What a USB3 Vision stream channel reads: bulk transfers from the stream endpoint (libusb, with
/// several transfers in flight) or a simulated peer. One call returns one transfer's bytes.
public protocol StreamTransport: AnyObject, Sendable {
    /// The next transfer, or nil when none came within `timeoutMs`.
    func read(maxBytes: Int, timeoutMs: Int) throws -> [UInt8]?
}

/// One image assembled from the stream, or the news that a block did not come complete.
public enum U3VBlock: Sendable, Equatable {
    case image(blockID: UInt64, leader: U3VLeader, payload: [UInt8])
    /// A block lost (a gap in block ids) or broken (payload short, bad trailer status): a missing frame.
    case missing(blockID: UInt64, reason: String)
}

/// Assembles images from the stream channel: leader, payload transfers, trailer. Block ids count up
/// by one; a gap is a missing frame for every id skipped. A transfer that is neither a leader nor a
/// trailer while no block is open, a trailer of another block, or a payload of the wrong size makes
/// the open block missing (with the reason) and the receiver resynchronises at the next leader.
// Sendable by hand: block state used only by the camera's one stream thread.
public final class U3VStreamReceiver: @unchecked Sendable {
    let transport: StreamTransport
    /// Largest single transfer (the SIRM's payload transfer size; leaders and trailers are smaller).
    public var maxTransferBytes: Int
    private var expectedBlock: UInt64?
    private var queued: Deque<U3VBlock> = []
    public private(set) var malformed = 0

    public init(transport: StreamTransport, maxTransferBytes: Int = 1 << 20) {
        self.transport = transport; self.maxTransferBytes = maxTransferBytes
    }

    /// The next block (image or missing), or nil when the stream was quiet for `timeoutMs`.
    public func next(timeoutMs: Int) throws -> U3VBlock? {
        if !queued.isEmpty { return queued.removeFirst() }
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        func remaining() -> Int {
            max(0, Int((Int64(deadline) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1_000_000))
        }
        var leader: U3VLeader?
        var payload: [UInt8] = []
        while true {
            guard let t = try transport.read(maxBytes: maxTransferBytes, timeoutMs: remaining()) else {
                if let l = leader {
                    return emit(.missing(blockID: l.blockID, reason: "no trailer within the deadline"))
                }
                return nil
            }
            let prefix: UInt32? = t.count >= 4 ? t[0..<4].reversed().reduce(0) { $0 << 8 | UInt32($1) } : nil
            if prefix == U3V.leaderPrefix, let l = try? U3VLeader.decode(t) {
                if let open = leader {  // a new leader while a block is open: that block lost its trailer
                    queued += gap(before: open.blockID)
                    queued.append(.missing(blockID: open.blockID, reason: "trailer missing"))
                }
                leader = l; payload = []
                payload.reserveCapacity(min(Self.imageBytes(l), 1 << 28))
                continue
            }
            if prefix == U3V.trailerPrefix, let tr = try? U3VTrailer.decode(t) {
                guard let l = leader, tr.blockID == l.blockID else { malformed += 1; continue }
                let expected = Self.imageBytes(l)
                if tr.status != 0 {
                    return emit(.missing(blockID: l.blockID, reason: "trailer status \(U3V.statusText(tr.status))"))
                }
                guard payload.count == expected, Int(tr.validPayloadSize) == expected else {
                    return emit(
                        .missing(
                            blockID: l.blockID,
                            reason:
                                "payload \(payload.count) bytes (trailer says \(tr.validPayloadSize)); \(expected) expected"
                        ))
                }
                return emit(.image(blockID: l.blockID, leader: l, payload: payload))
            }
            if leader != nil { payload += t } else { malformed += 1 }  // payload with no leader: resynchronise
        }
    }

    /// Forgets the block ids seen (a new acquisition counts from 0 again).
    public func reset() { expectedBlock = nil; queued = [] }

    /// The missing blocks a gap in ids before `id` implies; advances the expected id past `id`.
    private func gap(before id: UInt64) -> [U3VBlock] {
        var out: [U3VBlock] = []
        if let e = expectedBlock, id > e {
            for missing in e..<min(id, e + 10_000) { out.append(.missing(blockID: missing, reason: "block id gap")) }
        }
        expectedBlock = max(expectedBlock ?? 0, id + 1)
        return out
    }

    /// Queues the gap before `block`, then `block`; returns the first queued.
    private func emit(_ block: U3VBlock) -> U3VBlock {
        let id: UInt64
        switch block {
        case .image(let b, _, _): id = b;
        case .missing(let b, _): id = b
        }
        queued += gap(before: id)
        queued.append(block)
        return queued.removeFirst()
    }

    /// Bytes of the image a leader announces (no overflow: at most 2³² × 2³² × 32 bytes fits in Int64 only
    /// when clamped, so the product saturates).
    static func imageBytes(_ l: U3VLeader) -> Int {
        let (a, o1) = Int(l.sizeX).multipliedReportingOverflow(by: Int(l.sizeY))
        let (b, o2) = a.multipliedReportingOverflow(by: bytesPerPixel(l.pixelFormat))
        return o1 || o2 ? Int.max : b
    }

    /// Bytes per pixel of the PFNC formats the driver accepts (Mono8, Mono10/12/14/16 in 16 bit).
    public static func bytesPerPixel(_ pfnc: UInt32) -> Int {
        switch pfnc {
        case 0x0108_0001: return 1  // Mono8
        case 0x0110_0003, 0x0110_0005, 0x0110_0025, 0x0110_0007: return 2  // Mono10, Mono12, Mono14, Mono16
        default: return Int((pfnc >> 16) & 0xFF + 7) / 8
        }
    }
}

/// The stream side of a simulated USB3 Vision device: images sent as leader, payload transfers
/// (split at `transferBytes`) and trailer, with faults on demand (a dropped block, a lost trailer).
// Sendable by hand: mutable state guarded by `cond` (NSCondition).
public final class SimulatedU3VStream: StreamTransport, @unchecked Sendable {
    private let cond = NSCondition()
    private var transfers: [[UInt8]] = []
    public var transferBytes = 65_536
    private var _vanished = false
    /// The device is gone: reads fail (a waiting read at once).
    public var vanished: Bool {
        get { cond.lock(); defer { cond.unlock() }; return _vanished }
        set { cond.lock(); _vanished = newValue; cond.broadcast(); cond.unlock() }
    }
    /// Transfers queued and not yet read.
    public var backlog: Int { cond.lock(); defer { cond.unlock() }; return transfers.count }

    public init() {}

    /// Queues one Mono16 image as the device would send it. `dropTrailer` loses its trailer; `skip` sends nothing (a gap).
    public func send(
        blockID: UInt64, width: Int, height: Int, pixels: [UInt16], timestampNs: UInt64? = nil,
        dropTrailer: Bool = false, skip: Bool = false
    ) {
        guard !skip else { return }
        var payload: [UInt8]
        if UInt16(littleEndian: 1) == 1 {
            payload = pixels.withUnsafeBytes { Array($0) }
        } else {
            payload = []
            payload.reserveCapacity(pixels.count * 2)
            for p in pixels { payload.le(p) }
        }
        send(
            blockID: blockID, width: width, height: height, payload: payload, timestampNs: timestampNs,
            dropTrailer: dropTrailer)
    }

    /// Queues one Mono16 image already in little-endian bytes.
    public func send(
        blockID: UInt64, width: Int, height: Int, payload: [UInt8], timestampNs: UInt64? = nil,
        dropTrailer: Bool = false, skip: Bool = false
    ) {
        guard !skip else { return }
        var out: [[UInt8]] = [
            U3VLeader(
                blockID: blockID, timestampNs: timestampNs ?? blockID * 1000, pixelFormat: 0x0110_0007,
                sizeX: UInt32(width), sizeY: UInt32(height)
            ).encode()
        ]
        var i = 0
        while i < payload.count {
            out.append(Array(payload[i..<min(payload.count, i + transferBytes)])); i += transferBytes
        }
        if !dropTrailer {
            out.append(
                U3VTrailer(blockID: blockID, validPayloadSize: UInt64(payload.count), sizeY: UInt32(height)).encode())
        }
        cond.lock(); transfers += out; cond.broadcast(); cond.unlock()
    }

    /// Queues raw bytes as one transfer (for malformed-input tests).
    public func sendRaw(_ bytes: [UInt8]) { cond.lock(); transfers.append(bytes); cond.broadcast(); cond.unlock() }

    public func read(maxBytes: Int, timeoutMs: Int) throws -> [UInt8]? {
        let end = Date(timeIntervalSinceNow: Double(timeoutMs) / 1000)
        cond.lock(); defer { cond.unlock() }
        while true {
            guard !_vanished else { throw MoireError(.hardware, "device disconnected", place: "USB3 Vision stream") }
            if !transfers.isEmpty { break }
            if !cond.wait(until: end) { return nil }
        }
        let t = transfers.removeFirst()
        return Array(t.prefix(maxBytes))
    }
}
