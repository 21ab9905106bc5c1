import Foundation
import MoireConfig
import MoireCore

/// The USB3 Vision camera driver: bootstrap registers (ABRM → SBRM → SIRM) size the control and
/// stream channels; the camera features an acquisition needs (Width, Height, ExposureTime,
/// TriggerMode, TriggerSoftware, AcquisitionStart, AcquisitionStop, PayloadSize) come from the
/// profile's register table; frames come from the stream channel, a gap in block ids being missing
/// frames (the runner sees the skipped frame ids). The transports are libusb's bulk endpoints or
/// simulated peers, byte for byte the same.
// Sendable by hand: state changed by the runner's thread only; one stream thread.
public final class USB3VisionCamera: Camera, @unchecked Sendable {
    public let name: String
    public let profile: CameraProfile
    let control: GenCPChannel
    let receiver: U3VStreamReceiver
    private var sirm: UInt64 = 0
    private var settings = CameraSettings(width: 0, height: 0, exposureMs: 1, trigger: .software)
    private var pool: FramePool?
    private var acquiring = false
    public private(set) var exposedCount = 0
    /// SHA-256 of the GenICam file the camera carries (first manifest entry), when it has a manifest.
    public private(set) var genicamSHA256: String?

    public static let requiredFeatures = [
        "Width", "Height", "ExposureTime", "TriggerMode", "TriggerSoftware",
        "AcquisitionStart", "AcquisitionStop", "PayloadSize",
    ]

    public init(name: String, profile: CameraProfile, control: ControlTransport, stream: StreamTransport) throws {
        let missing = Self.requiredFeatures.filter { profile.registers[$0] == nil }
        guard missing.isEmpty else {
            throw MoireError(
                .config, "the camera profile's register table lacks \(missing.joined(separator: ", "))",
                place: "camera \(name)")
        }
        self.name = name; self.profile = profile
        self.control = GenCPChannel(transport: control)
        receiver = U3VStreamReceiver(transport: stream)
        try bootstrap()
    }

    /// ABRM: response time and SBRM address; SBRM: transfer limits and SIRM address.
    private func bootstrap() throws {
        let responseMs = try control.readU32(U3V.ABRM.maximumDeviceResponseTime)
        control.timeoutMs = Int(min(max(responseMs, 10), 10_000))
        let sbrm = try control.readU64(U3V.ABRM.sbrmAddress)
        let maxAck = try control.readU32(sbrm + U3V.SBRM.maximumAcknowledgeTransferLength)
        control.maxReadBytes = max(4, Int(maxAck) - 12)
        sirm = try control.readU64(sbrm + U3V.SBRM.sirmAddress)
        try checkGenICamFile()
    }

    /// The register table is only right for the camera whose GenICam file it came from: the file
    /// named by the first manifest entry (file version u32, schema u32, address u64, size u64,
    /// SHA-1, reserved: 64 bytes after the u64 entry count) is read and its SHA-256 compared with the
    /// profile's `genicam_xml_sha256`. A different file is refused; a profile without a hash is accepted.
    private func checkGenICamFile() throws {
        let manifest = try control.readU64(U3V.ABRM.manifestTableAddress)
        guard manifest != 0 else { return }
        let entries = try control.readU64(manifest)
        guard entries >= 1, entries <= 64 else {
            throw MoireError(.hardware, "the camera's manifest table lists \(entries) files", place: "camera \(name)")
        }
        var r = LEReader(try control.readMem(address: manifest + 8, count: 64), what: "manifest entry")
        _ = try r.u32(); _ = try r.u32()
        let address = try r.u64()
        let size = try r.u64()
        guard size > 0, size <= 64 << 20 else {
            throw MoireError(.hardware, "the camera's GenICam file is \(size) bytes", place: "camera \(name)")
        }
        let digest = SHA256.hex(try control.readMem(address: address, count: Int(size)))
        genicamSHA256 = digest
        if let want = profile.genicamXMLSHA256?.lowercased(), want != digest {
            throw MoireError(
                .config,
                "this camera's GenICam file (SHA-256 \(digest.prefix(16))…) is not the one the profile's register table came from (\(want.prefix(16))…); extract the registers from this camera's file",
                place: "camera \(name)")
        }
    }

    private func write(_ feature: String, _ value: Double) throws {
        let r = profile.registers[feature]!
        let v = value * r.scale
        var b: [UInt8] = []
        switch r.kind {
        case .uint32, .command: b.le(UInt32(max(0, v.rounded())))
        case .uint64: b.le(UInt64(max(0, v.rounded())))
        case .float32: b.le(Float(v).bitPattern)
        case .float64: b.le(v.bitPattern)
        }
        try control.writeMem(address: r.address, data: b)
    }

    public func configure(_ s: CameraSettings) throws {
        guard !acquiring else { throw MoireError(.state, "cannot configure while acquiring", place: "camera \(name)") }
        guard profile.exposureMs.contains(s.exposureMs) else {
            throw MoireError(
                .hardware, "exposure \(s.exposureMs) ms outside \(profile.exposureMs)", place: "camera \(name)")
        }
        try write("Width", Double(s.width)); try write("Height", Double(s.height))
        try write("ExposureTime", s.exposureMs)
        try write("TriggerMode", s.trigger == .internal ? 0 : 1)
        if s.trigger != .internal, let src = profile.registers["TriggerSource"] {
            guard let v = src.values[s.trigger.rawValue] else {
                throw MoireError(
                    .config, "the profile's TriggerSource has no value for '\(s.trigger.rawValue)'",
                    place: "camera \(name)")
            }
            try control.writeU32(src.address, v)
        }
        settings = s
    }

    public func start(pool: FramePool) throws {
        guard pool.slotBytes >= settings.width * settings.height * 2 else {
            throw MoireError(
                .hardware, "frame pool slots are too small for \(settings.width)×\(settings.height)",
                place: "camera \(name)")
        }
        let payload = Int(try control.readU32(profile.registers["PayloadSize"]!.address))
        guard payload == settings.width * settings.height * 2 else {
            throw MoireError(
                .hardware,
                "the camera reports a payload of \(payload) bytes for \(settings.width)×\(settings.height) Mono16",
                place: "camera \(name)")
        }
        // Stream interface: transfers of at most 1 MiB, the rest in the final transfer.
        let transfer = min(payload, 1 << 20)
        try control.writeU32(sirm + U3V.SIRM.payloadTransferSize, UInt32(transfer))
        try control.writeU32(sirm + U3V.SIRM.payloadTransferCount, UInt32(payload / transfer))
        try control.writeU32(sirm + U3V.SIRM.payloadFinalTransfer1Size, UInt32(payload % transfer))
        receiver.maxTransferBytes = transfer
        try control.writeU32(sirm + U3V.SIRM.control, 1)
        self.pool = pool
        exposedCount = 0
        receiver.reset()
        try write("AcquisitionStart", 1)
        acquiring = true
    }

    public func trigger() throws { try write("TriggerSoftware", 1) }

    public func nextFrame(timeoutMs: Int) throws -> CapturedFrame? {
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        while true {
            let left = max(0, Int((Int64(end) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1_000_000))
            let next: U3VBlock?
            do { next = try receiver.next(timeoutMs: left) } catch let e as MoireError {
                throw MoireError(e.kind, e.message, place: "camera \(name)" + (e.place.map { " (\($0))" } ?? ""))
            }
            guard let block = next else { return nil }
            switch block {
            case .missing(let id, _):
                exposedCount = max(exposedCount, Int(id) + 1)  // the runner sees the gap in frame ids
                continue
            case .image(let id, let leader, let payload):
                exposedCount = max(exposedCount, Int(id) + 1)
                guard let slot = pool?.acquire() else { continue }
                slot.withBytes { b in
                    payload.withUnsafeBytes {
                        b.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<min($0.count, b.count)]))
                    }
                }
                return CapturedFrame(
                    frameID: Int(id), slot: slot, byteCount: payload.count, width: Int(leader.sizeX),
                    height: Int(leader.sizeY),
                    exposureStartNs: Int64(leader.timestampNs), state: DeviceState(exposureMs: settings.exposureMs),
                    stateObserved: false)
            }
        }
    }

    public func stop() {
        guard acquiring else { return }
        acquiring = false
        try? write("AcquisitionStop", 1)
        try? control.writeU32(sirm + U3V.SIRM.control, 0)
    }

    public var isAcquiring: Bool { acquiring }
}
