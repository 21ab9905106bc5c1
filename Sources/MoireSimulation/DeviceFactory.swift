import Foundation
import MoireConfig
import MoireCore
import MoireHardware

/// Builds a rig's devices from its profiles, by driver family: `sim` (simulated twins on a shared
/// bench), `usb3vision` (cameras), `dlpc900` (DMDs), `serial-ascii` (galvos, stages, lasers on a
/// serial controller). A device with `connect: simulated-peer` runs its real driver against an
/// in-process peer that speaks the device's protocol byte for byte, with the bench's physics
/// behind it; otherwise the driver opens the device (USB, serial port).
public enum DeviceFactory {
    /// The rig's simulated devices with a `ReplayCamera` serving `recording`'s planes instead of its camera.
    public static func replaying(_ recording: String, rig: Rig, clock: MoireClock) throws -> RigDevices {
        let simulated = try make(rig: rig, clock: clock)
        let camera = try ReplayCamera(path: recording, profile: rig.cameraProfile, clock: clock)
        return RigDevices(
            rig: rig, camera: camera, modulator: simulated.modulator, scanner: simulated.scanner,
            stage: simulated.stage, lasers: simulated.lasers)
    }

    public static func make(rig: Rig, clock: MoireClock = RealClock(), world: SimWorld = SimWorld(), seed: UInt64 = 1)
        throws -> RigDevices
    {
        let peers =
            rig.allDevices.contains { $0.connect == .simulatedPeer } ? SimulatedPeers(world: world, clock: clock) : nil
        var usbContext: USBContext?
        func usb() throws -> USBContext {
            if let usbContext { return usbContext }
            let c = try USBContext()
            usbContext = c
            return c
        }
        func wrong(_ d: RigDevice) -> MoireError {
            MoireError(
                .config,
                "driver '\(d.profile.driver.rawValue)' cannot drive a \(d.profile.kind.rawValue) ('\(d.name)')",
                place: d.profile.file)
        }

        // Camera
        let camera: Camera
        let camDev = rig.camera
        func simCamera(_ name: String) -> SimulatedCamera {
            SimulatedCamera(
                name: name, profile: rig.cameraProfile, world: world, specimen: rig.specimen, optics: rig.optics,
                clock: clock,
                seed: seed, lightSheet: rig.lightSheet)
        }
        /// The simulated sensor (its exposure output), when the camera is simulated.
        var sensor: SimulatedCamera?
        switch camDev.profile.driver {
        case .sim:
            let c = simCamera(camDev.name)
            camera = c; sensor = c
        case .usb3vision:
            if let peers, camDev.connect == .simulatedPeer {
                let c = simCamera("\(camDev.name).sensor")
                sensor = c
                let peer = SimulatedU3VCamera(profile: rig.cameraProfile, sensor: c)
                peers.camera = peer
                camera = try USB3VisionCamera(
                    name: camDev.name, profile: rig.cameraProfile, control: peer.control, stream: peer.stream)
            } else {
                let (c, s) = try USB3VisionUSB.open(context: try usb(), connection: camDev.profile.connection)
                camera = try USB3VisionCamera(name: camDev.name, profile: rig.cameraProfile, control: c, stream: s)
            }
        default: throw wrong(camDev)
        }

        // Modulator
        var modulator: Modulator?
        if let d = rig.modulator {
            let mp = d.profile.modulator!
            switch d.profile.driver {
            case .sim:
                let m = SimulatedModulator(name: d.name, profile: mp, world: world, clock: clock)
                func opt(_ key: String, _ def: Double) throws -> Double {
                    guard let t = d.profile.extra[key] else { return def }
                    guard let v = Double(t), v.isFinite else {
                        throw MoireError(
                            .config, "driver_options.\(key) must be a number; found '\(t)'", place: d.profile.file)
                    }
                    return v
                }
                m.patternError = PatternError(
                    kScale: try opt("k_scale", 1), rotationDeg: try opt("rotation_deg", 0),
                    phaseOffsetRad: try opt("phase_offset_rad", 0))
                modulator = m
            case .dlpc900:
                let transport: HIDTransport
                if let peers, d.connect == .simulatedPeer {
                    transport = peers.makeDMD(name: d.name, profile: mp, firesCamera: rig.leader == .modulator)
                } else {
                    let vid = d.profile.connection["vendor_id"].flatMap(parseHex16) ?? 0x0451
                    let pid = d.profile.connection["product_id"].flatMap(parseHex16) ?? 0xC900
                    transport = try USBHIDTransport(context: try usb(), vendor: vid, product: pid)
                }
                modulator = try DLPC900Modulator(name: d.name, profile: mp, transport: transport)
            default: throw wrong(d)
            }
        }

        // Serial controllers, one per port, shared by the devices wired to it.
        var controllers: [String: SerialController] = [:]
        func controller(_ d: RigDevice) throws -> SerialController {
            guard let port = d.profile.connection["port"] else {
                throw MoireError(
                    .config, "a serial-ascii device needs connection.port (e.g. /dev/ttyACM0)", place: d.profile.file)
            }
            if let c = controllers[port] { return c }
            var path = port
            if let peers, d.connect == .simulatedPeer { path = try peers.serialController(port: port).pty.slavePath }
            let c: SerialController
            do { c = try SerialController(path: path, profile: d.profile.serial!) } catch let e as MoireError {
                throw MoireError(e.kind, e.message, place: "\(d.profile.kind.rawValue) \(d.name) on \(port)")
            }
            controllers[port] = c
            return c
        }

        var scanner: MoireHardware.Scanner?
        if let d = rig.scanner {
            switch d.profile.driver {
            case .sim: scanner = SimulatedScanner(name: d.name, profile: d.profile.scanner!, world: world)
            case .serialAscii:
                scanner = SerialScanner(
                    name: d.name, profile: d.profile.scanner!, serial: d.profile.serial!, controller: try controller(d))
                if d.connect == .simulatedPeer {
                    peers?.wire(d, physics: SimulatedScanner(name: d.name, profile: d.profile.scanner!, world: world))
                }
            default: throw wrong(d)
            }
        }
        var stage: Stage?
        if let d = rig.stage {
            switch d.profile.driver {
            case .sim: stage = SimulatedStage(name: d.name, profile: d.profile.stage!, world: world, clock: clock)
            case .serialAscii:
                stage = SerialStage(
                    name: d.name, profile: d.profile.stage!, serial: d.profile.serial!, controller: try controller(d))
                if d.connect == .simulatedPeer {
                    peers?.wire(
                        d, physics: SimulatedStage(name: d.name, profile: d.profile.stage!, world: world, clock: clock))
                }
            default: throw wrong(d)
            }
        }
        var lasers: [String: Laser] = [:]
        for d in rig.lasers {
            switch d.profile.driver {
            case .sim: lasers[d.name] = SimulatedLaser(name: d.name, profile: d.profile.laser!, world: world)
            case .serialAscii:
                lasers[d.name] = SerialLaser(
                    name: d.name, profile: d.profile.laser!, serial: d.profile.serial!, controller: try controller(d))
                if d.connect == .simulatedPeer {
                    peers?.wire(d, physics: SimulatedLaser(name: d.name, profile: d.profile.laser!, world: world))
                }
            default: throw wrong(d)
            }
        }
        var cameraTrigger: TriggerLine?
        if let d = rig.cameraTrigger {
            guard d.profile.driver == .serialAscii else { throw wrong(d) }
            cameraTrigger = SerialTriggerLine(name: d.name, serial: d.profile.serial!, controller: try controller(d))
            if d.connect == .simulatedPeer { peers?.wireCameraTrigger(d) }
        }
        let devices = RigDevices(
            rig: rig, camera: camera, modulator: modulator, scanner: scanner, stage: stage, lasers: lasers,
            cameraTrigger: cameraTrigger, faultInjection: sensor, peers: peers)
        // The scan controller's trigger input on the camera's exposure output (peers: the simulated sensor's).
        if rig.scanTrigger, let sensor, let peers {
            let ports = Set(
                [rig.stage, rig.scanner].compactMap { $0 }.filter { $0.connect == .simulatedPeer }.compactMap {
                    $0.profile.connection["port"]
                })
            let peerControllers = try ports.sorted().map { try peers.serialController(port: $0) }
            sensor.onExposureEnd = { for c in peerControllers { c.triggerIn() } }
        }
        return devices
    }
}

extension RigDevices {
    /// The in-process peers of the rig's `simulated-peer` devices, with their type (their logs are
    /// what the tests compare).
    public var simulatedPeers: SimulatedPeers? { peers as? SimulatedPeers }
}
