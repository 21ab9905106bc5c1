import Foundation
import MoireConfig
import MoireCore
import MoireHardware

/// A whole simulated USB3 Vision camera: the control peer's register map laid out like a device's
/// (ABRM, SBRM, SIRM, the feature registers of a profile) and the stream peer. Its sensor is a
/// `SimulatedCamera` (the physical simulation: optics, pattern, noise, timing) when one is given,
/// otherwise a test ramp; an exposure starts per software trigger, per pulse on its trigger input
/// (`externalTrigger`, wired to a DMD's trigger out) when TriggerSource says external, or
/// `freeRunFrames` at AcquisitionStart in free run. Block ids count from 0 at every start.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class SimulatedU3VCamera: FaultInjecting, @unchecked Sendable {
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
