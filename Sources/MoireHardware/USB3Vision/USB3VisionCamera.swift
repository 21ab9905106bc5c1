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

/// A whole simulated USB3 Vision camera: the control peer's register map laid out like a device's
/// (ABRM, SBRM, SIRM, the feature registers of a profile) and the stream peer. Its sensor is a
/// `SimulatedCamera` (the physical simulation: optics, pattern, noise, timing) when one is given,
/// otherwise a test ramp; an exposure starts per software trigger, per pulse on its trigger input
/// (`externalTrigger`, wired to a DMD's trigger out) when TriggerSource says external, or
/// `freeRunFrames` at AcquisitionStart in free run. Block ids count from 0 at every start.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SimulatedU3VCamera: @unchecked Sendable {
    public let control = SimulatedU3VPeer()
    public let stream = SimulatedU3VStream()
    let registers: [String: CameraRegister]
    public var freeRunFrames = 10
    /// Block ids the camera "loses" (never sends).
    public var dropBlocks: Set<UInt64> = []
    private var nextBlock: UInt64 = 0
    public static let sbrm: UInt64 = 0x1_0000, sirm: UInt64 = 0x2_0000
    private let sensor: SimulatedCamera?
    /// The simulated sensor behind the peer (what it exposed, where).
    public var sensorCamera: SimulatedCamera? { sensor }
    private let lock = NSLock()
    private var acquiring = false
    private var generation = 0
    /// Exposures started by a trigger-input pulse.
    public private(set) var externalTriggers = 0
    /// Send one precomputed test image every time (benchmarks: the peer's own cost stays small).
    public var constantImage = false
    private var cachedImage: (w: Int, h: Int, pixels: [UInt16])?

    public init(profile: CameraProfile, sensor: SimulatedCamera? = nil) {
        registers = profile.registers
        self.sensor = sensor
        control.setU32(U3V.ABRM.maximumDeviceResponseTime, 200)
        control.setU64(U3V.ABRM.sbrmAddress, Self.sbrm)
        control.setU32(Self.sbrm + U3V.SBRM.maximumAcknowledgeTransferLength, 1024)
        control.setU64(Self.sbrm + U3V.SBRM.sirmAddress, Self.sirm)
        // The device's GenICam file and the manifest table that names it.
        let file = Array(Self.genicamXML(registers: profile.registers).utf8)
        control.setU64(U3V.ABRM.manifestTableAddress, Self.manifest)
        control.setU64(Self.manifest, 1)
        control.setU32(Self.manifest + 8, 0x0001_0000)  // file version 1.0.0
        control.setU32(Self.manifest + 12, 0)  // schema: uncompressed XML
        control.setU64(Self.manifest + 16, Self.xmlAddress)
        control.setU64(Self.manifest + 24, UInt64(file.count))
        control.setBytes(Self.xmlAddress, file)
        control.onWrite = { [unowned self] address, _ in self.written(address) }
    }

    public static let manifest: UInt64 = 0x3_0000, xmlAddress: UInt64 = 0x4_0000

    /// The simulated camera's GenICam file: its features as integer/float/command registers.
    public static func genicamXML(registers: [String: CameraRegister]) -> String {
        var x =
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<RegisterDescription ModelName=\"MoireSimulatedU3V\" VendorName=\"Moire\" "
        x += "StandardNameSpace=\"None\" SchemaMajorVersion=\"1\" SchemaMinorVersion=\"1\" SchemaSubMinorVersion=\"0\" "
        x +=
            "MajorVersion=\"1\" MinorVersion=\"0\" SubMinorVersion=\"0\" ProductGuid=\"00000000-0000-0000-0000-000000000000\" "
        x +=
            "VersionGuid=\"00000000-0000-0000-0000-000000000001\" xmlns=\"http://www.genicam.org/GenApi/Version_1_1\">\n"
        for (name, r) in registers.sorted(by: { $0.key < $1.key }) {
            let addr = String(format: "0x%llX", r.address)
            switch r.kind {
            case .float32, .float64:
                x +=
                    "  <FloatReg Name=\"\(name)Reg\"><Address>\(addr)</Address><Length>\(r.kind == .float32 ? 4 : 8)</Length><AccessMode>RW</AccessMode><pPort>Device</pPort><Endianess>LittleEndian</Endianess></FloatReg>\n"
            case .command:
                x +=
                    "  <IntReg Name=\"\(name)Reg\"><Address>\(addr)</Address><Length>4</Length><AccessMode>WO</AccessMode><pPort>Device</pPort><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess></IntReg>\n"
            case .uint32, .uint64:
                x +=
                    "  <IntReg Name=\"\(name)Reg\"><Address>\(addr)</Address><Length>\(r.kind == .uint32 ? 4 : 8)</Length><AccessMode>RW</AccessMode><pPort>Device</pPort><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess></IntReg>\n"
            }
        }
        return x + "</RegisterDescription>\n"
    }

    func value(_ feature: String) -> UInt32 { registers[feature].map { control.u32($0.address) } ?? 0 }
    private func source(is name: String) -> Bool {
        guard let r = registers["TriggerSource"] else { return name == "software" }
        return r.values[name].map { control.u32(r.address) == $0 } ?? false
    }

    /// A fault for the sensor to produce (dropped, stalled, malformed exposures) during the next acquisition.
    public func inject(_ fault: CameraFault) { sensor?.inject(fault) }

    /// The device is unplugged: control and stream fail from now on.
    public func vanish() {
        control.vanished = true
        stream.vanished = true
        lock.lock(); acquiring = false; generation += 1; lock.unlock()
        sensor?.stop()
    }

    /// The device's reaction to a register write (called by the control peer).
    func written(_ address: UInt64) {
        let w = Int(value("Width"))
        let h = Int(value("Height"))
        if address == registers["Width"]?.address || address == registers["Height"]?.address,
            let ps = registers["PayloadSize"]
        {
            control.setU32(ps.address, UInt32(w * h * 2))
        }
        if address == registers["AcquisitionStart"]?.address { startAcquisition(w, h) }
        if address == registers["AcquisitionStop"]?.address { stopAcquisition() }
        if address == registers["TriggerSoftware"]?.address, value("TriggerMode") == 1, source(is: "software"),
            control.u32(Self.sirm + U3V.SIRM.control) & 1 == 1
        {
            expose(w, h)
        }
    }

    /// A pulse on the trigger input line.
    public func externalTrigger() {
        lock.lock(); let on = acquiring; lock.unlock()
        guard on, value("TriggerMode") == 1, source(is: "external") else { return }
        lock.lock(); externalTriggers += 1; lock.unlock()
        expose(Int(value("Width")), Int(value("Height")))
    }

    private func startAcquisition(_ w: Int, _ h: Int) {
        stopAcquisition()
        lock.lock(); nextBlock = 0; acquiring = true; generation += 1; let gen = generation; lock.unlock()
        if let sensor {
            var exposureMs = 10.0
            if let r = registers["ExposureTime"] {
                let raw = control.u32(r.address)
                exposureMs = (r.kind == .float32 ? Double(Float(bitPattern: raw)) : Double(raw)) / r.scale
            }
            do {
                try sensor.configure(CameraSettings(width: w, height: h, exposureMs: exposureMs, trigger: .software))
                let pool = FramePool(slots: 8, bytes: w * h * 2)
                try sensor.start(pool: pool)
            } catch {
                return  // the sensor refuses the settings: no frames (the host's deadline reports it)
            }
            let t = Thread { [self] in pump(generation: gen, width: w, height: h) }
            t.name = "moire.sim.u3v.sensor"
            t.start()
        }
        if value("TriggerMode") == 0 { for _ in 0..<freeRunFrames { expose(w, h) } }
    }

    private func stopAcquisition() {
        lock.lock(); let was = acquiring; acquiring = false; generation += 1; lock.unlock()
        if was { sensor?.stop() }
    }

    private func expose(_ w: Int, _ h: Int) {
        if let sensor { try? sensor.trigger(); return }
        lock.lock(); let id = nextBlock; nextBlock += 1; lock.unlock()
        let pixels: [UInt16]
        if constantImage, let c = cachedImage, c.w == w, c.h == h {
            pixels = c.pixels
        } else {
            pixels = (0..<(w * h)).map { UInt16(truncatingIfNeeded: 100 + Int(id) * 10 + $0 % 97) }
            if constantImage { cachedImage = (w, h, pixels) }
        }
        stream.send(blockID: id, width: w, height: h, pixels: pixels, skip: dropBlocks.contains(id))
    }

    /// Sends the sensor's frames as stream blocks as they are read out.
    private func pump(generation gen: Int, width w: Int, height h: Int) {
        guard let sensor else { return }
        while true {
            lock.lock(); let live = generation == gen; lock.unlock()
            guard live else { return }
            guard let f = try? sensor.nextFrame(timeoutMs: 20) else { continue }
            guard let slot = f.slot else { continue }
            let payload = slot.withBytes { Array(UnsafeRawBufferPointer(rebasing: $0[0..<min($0.count, w * h * 2)])) }
            slot.release()
            // The sensor's exposure counter is the block id: an exposure it lost is a gap the host sees.
            let id = UInt64(f.frameID)
            stream.send(
                blockID: id, width: w, height: h, payload: payload, timestampNs: UInt64(max(0, f.exposureStartNs)),
                skip: dropBlocks.contains(id))
        }
    }
}
