import Foundation
import MoireCore

/// A device placed on a rig: its name there and its profile.
public struct RigDevice: Sendable, Equatable {
    /// What the driver talks to: the device itself (USB, serial port), or a simulated peer in this
    /// process that speaks the device's protocol byte for byte (for tests and demonstrations).
    public enum Connect: String, Sendable, CaseIterable { case device, simulatedPeer = "simulated-peer" }
    public var name: String
    public var profile: DeviceProfile
    public var connect: Connect = .device
}

/// Acquisition modes a protocol can ask for.
public enum AcquisitionMode: String, Sendable, CaseIterable, Codable {
    case sim2d, sim3d, llssim, llsm, widefield

    /// Pattern angles × phases per plane that the mode needs at least.
    public var needsPatterns: Bool { self == .sim2d || self == .sim3d || self == .llssim }
}

/// Which device paces the acquisition.
public enum TimingLeader: String, Sendable, CaseIterable, Codable {
    /// The modulator runs an uploaded sequence and triggers the camera (hardware-sequenced).
    case modulator
    /// The host sets every device and triggers each exposure (software-timed).
    case software
}

/// A rig's light sheet: its angle to the scan direction, thickness (FWHM) and length, and what
/// scans the stack (the sample stage, or the galvo that moves sheet and detection focus together).
public struct LightSheetSpec: Sendable, Equatable {
    public enum Scan: String, Sendable, CaseIterable { case stage, galvo }
    public var angleDeg: Double
    public var thicknessUm: Double
    public var lengthUm: Double
    public var scan: Scan
    /// Measured PSFs for deconvolving the volumes (TIFF or MRC, odd sides, sampled on the deskewed
    /// voxels): one for every channel, and/or one per emission wavelength (nm). None: the model.
    public var psfFile: String? = nil
    public var psfByEmissionNm: [Double: String] = [:]

    /// The measured PSF for a channel's emission: its own (within 0.5 nm), else the common one.
    public func psf(emissionNm: Double) -> String? {
        psfByEmissionNm.first { abs($0.key - emissionNm) <= 0.5 }?.value ?? psfFile
    }
}

/// A simulated specimen description (sim rigs only).
public struct SpecimenSpec: Sendable, Equatable {
    /// `beads`: 3D point-like beads (`puncta` of them) and, when asked for, 3D filaments (`filaments`
    /// worm-like chains) in a box of `sizeUm`, for light-sheet rigs.
    public enum Kind: String, Sendable, CaseIterable { case filaments, puncta, mixed, tiff, beads }
    public var file: String
    public var kind: Kind
    public var seed: UInt64
    public var filaments: Int
    public var puncta: Int
    /// Emitted photons per µm² per ms per mW of excitation at a structure of unit density.
    public var brightness: Double
    /// Background fluorescence in the same unit (uniform, out-of-focus haze).
    public var background: Double
    /// Ground-truth image for `tiff` specimens, and its pixel size in µm.
    public var tiffPath: String?
    public var tiffPixelUm: Double?
    /// Photobleaching: fraction of signal lost per exposure-second at 1 mW.
    public var bleachPerMwS: Double
    /// The box 3D specimens fill (x along the deskewed width, y, z along the detection axis), µm.
    public var sizeUm: [Double] = [60, 30, 20]

    public static func load(file: String) throws -> SpecimenSpec {
        try ConfigNode.withParsingLock { try loadLocked(file: file) }
    }

    private static func loadLocked(file: String) throws -> SpecimenSpec {
        let root = try ConfigNode.load(file: file)
        try root.checkVersion()
        let kind = try root.required("kind").choice(Kind.self)
        let seed = try root.child("seed")?.int(in: 0...Int.max) ?? 1
        // 3D specimens (`beads`) have filaments only when asked for.
        let filaments =
            try root.optionalInt("filaments", in: 0...100_000) ?? (kind == .puncta || kind == .beads ? 0 : 40)
        let puncta = try root.optionalInt("puncta", in: 0...1_000_000) ?? (kind == .filaments ? 0 : 200)
        let brightness = try root.optionalDouble("brightness", in: 0...1e9) ?? 20
        let background = try root.optionalDouble("background", in: 0...1e9) ?? 0.5
        let bleach = try root.optionalDouble("bleach_per_mw_s", in: 0...1e6) ?? 0
        var tiffPath: String?
        var tiffPixel: Double?
        if kind == .tiff {
            tiffPath = root.resolvePath(try root.required("tiff").string())
            tiffPixel = try root.required("tiff_pixel_um").double(in: 0.001...100, unit: " µm")
        }
        var size = [60.0, 30, 20]
        if let sn = try root.child("size_um") {
            size = try sn.doubles(count: 3)
            guard size.allSatisfy({ $0 > 0 && $0 <= 10_000 }) else {
                throw sn.error("size_um must be three positive lengths (µm)")
            }
        }
        try root.finish()
        return SpecimenSpec(
            file: file, kind: kind, seed: UInt64(seed), filaments: filaments, puncta: puncta,
            brightness: brightness, background: background, tiffPath: tiffPath, tiffPixelUm: tiffPixel,
            bleachPerMwS: bleach, sizeUm: size)
    }
}

/// A rig: which device fills each role, the optics, and the wiring.
public struct Rig: Sendable, Equatable {
    public var file: String
    public var name: String
    public var camera: RigDevice
    public var modulator: RigDevice?
    public var scanner: RigDevice?
    public var stage: RigDevice?
    public var lasers: [RigDevice]
    /// A controller's digital line wired to the camera's trigger input (software-timed rigs: each
    /// exposure is a pulse on it instead of a software command).
    public var cameraTrigger: RigDevice?
    /// The controller that drives the z scan (the stage, or the galvo of a galvo-scanned light
    /// sheet) has its trigger input wired to the camera's exposure output: a table of positions is
    /// loaded once and stepped at the end of every exposure (`wiring.scan_trigger: camera`).
    public var scanTrigger = false
    public var optics: Optics
    /// Measured radial OTF (MRC line) of the detection path, for reconstruction; nil: the ideal OTF.
    public var otfFile: String?
    /// Extra fall-off of the ideal OTF, a^(f/fc) (1: none).
    public var otfAttenuation: Double = 1
    public var leader: TimingLeader
    public var specimen: SpecimenSpec?
    public var lightSheet: LightSheetSpec?

    public var cameraProfile: CameraProfile { camera.profile.camera! }
    public func laser(named name: String) -> RigDevice? { lasers.first { $0.name == name } }

    /// Modes this rig can run, from the devices it has.
    public var modes: [AcquisitionMode] {
        var m: [AcquisitionMode] = [.widefield]
        if let mod = modulator?.profile.modulator, !mod.patternSets.isEmpty {
            m.append(.sim2d)
            if stage != nil, mod.patternSets.contains(where: { $0.phases >= 5 }) { m.append(.sim3d) }
        }
        if let ls = lightSheet, ls.scan == .stage ? stage != nil : scanner != nil { m.append(.llsm) }
        if m.contains(.sim2d), (m.contains(.llsm) || (scanner != nil && stage != nil)) { m.append(.llssim) }
        return m
    }

    /// Every device on the rig, for safe-state sweeps and listings.
    public var allDevices: [RigDevice] {
        [camera] + [modulator, scanner, stage].compactMap { $0 } + lasers + [cameraTrigger].compactMap { $0 }
    }

    public static func load(file: String) throws -> Rig {
        try ConfigNode.withParsingLock { try loadLocked(file: file) }
    }

    static func loadLocked(file: String) throws -> Rig {
        let root = try ConfigNode.load(file: file)
        try root.checkVersion()
        let name = try root.required("name").string()
        let devices = try root.required("devices")
        func device(_ node: ConfigNode, kind: DeviceKind, defaultName: String) throws -> RigDevice {
            let n = try node.optionalString("name") ?? defaultName
            let pathNode = try node.required("profile")
            let path = node.resolvePath(try pathNode.string())
            let profile: DeviceProfile
            do {
                profile = try DeviceProfile.load(file: path)
            } catch let e as MoireError where e.kind == .io {
                throw pathNode.error("cannot load device profile '\(path)': \(e.message)")
            }
            guard profile.kind == kind else {
                throw pathNode.error(
                    "profile '\(path)' describes a \(profile.kind.rawValue), but this role needs a \(kind.rawValue)")
            }
            var connect = RigDevice.Connect.device
            if let cn = try node.child("connect") {
                connect = try cn.choice(RigDevice.Connect.self)
                if connect == .simulatedPeer, profile.driver == .sim {
                    throw cn.error(
                        "connect: simulated-peer is for devices with a real driver; '\(profile.model)' is already simulated"
                    )
                }
            }
            try node.finish()
            return RigDevice(name: n, profile: profile, connect: connect)
        }
        let camera = try device(devices.required("camera"), kind: .camera, defaultName: "camera")
        let modulator = try devices.child("modulator").map {
            try device($0, kind: .modulator, defaultName: "modulator")
        }
        let scanner = try devices.child("scanner").map { try device($0, kind: .scanner, defaultName: "scanner") }
        let stage = try devices.child("stage").map { try device($0, kind: .stage, defaultName: "stage") }
        var lasers: [RigDevice] = []
        if let ln = try devices.child("lasers") {
            for item in try ln.list() {
                let l = try device(item, kind: .laser, defaultName: "laser\(lasers.count)")
                if lasers.contains(where: { $0.name == l.name }) {
                    throw item.error("duplicate laser name '\(l.name)'")
                }
                lasers.append(l)
            }
        }
        try devices.finish()
        let on = try root.required("optics")
        let optics = Optics(
            objectiveNA: try on.required("objective_na").double(in: 0.01...1.7),
            magnification: try on.required("magnification").double(in: 1...1000, unit: "×"),
            immersionIndex: try on.required("immersion_index").double(in: 1...2),
            tubeLensMm: try on.optionalDouble("tube_lens_mm", in: 1...10_000, unit: " mm"))
        if optics.objectiveNA > optics.immersionIndex {
            throw try on.required("objective_na").error(
                "NA \(fmt(optics.objectiveNA)) exceeds the immersion index \(fmt(optics.immersionIndex))")
        }
        var otfFile: String?
        if let otfNode = try on.child("otf") {
            let path = on.resolvePath(try otfNode.string())
            guard FileManager.default.fileExists(atPath: path) else {
                throw otfNode.error("OTF file '\(path)' does not exist")
            }
            otfFile = path
        }
        let otfAttenuation = try on.optionalDouble("otf_attenuation", in: 0.01...1) ?? 1
        try on.finish()
        var leader = TimingLeader.software
        var cameraTrigger: RigDevice?
        var scanTrigger = false
        if let wiring = try root.child("wiring") {
            if let tn = try wiring.child("camera_trigger") {
                cameraTrigger = try device(tn, kind: .trigger, defaultName: "camera_trigger")
                guard camera.profile.camera!.triggerModes.contains("external") else {
                    throw tn.error("a camera trigger line needs a camera with the 'external' trigger mode")
                }
            }
            if let sn = try wiring.child("scan_trigger") {
                guard try sn.string() == "camera" else {
                    throw sn.error("scan_trigger must be 'camera' (the camera's exposure output)")
                }
                let tabled = [stage, scanner].compactMap { $0 }.filter { d in
                    d.profile.serial.map { $0.commands["waveform_point"] != nil && $0.commands["waveform_arm"] != nil }
                        ?? false
                }
                guard !tabled.isEmpty else {
                    throw sn.error(
                        "scan_trigger needs a stage or scanner on a serial controller whose profile has waveform_point and waveform_arm"
                    )
                }
                scanTrigger = true
            }
            if let ln = try wiring.child("leader") {
                leader = try ln.choice(TimingLeader.self)
                if leader == .modulator {
                    guard let mp = modulator?.profile.modulator, mp.triggerOut, mp.sequenceMax > 0 else {
                        throw ln.error(
                            "leader 'modulator' needs a modulator whose profile has trigger_out and sequence_max > 0")
                    }
                    guard camera.profile.camera!.triggerModes.contains("external") else {
                        throw ln.error("leader 'modulator' needs a camera with the 'external' trigger mode")
                    }
                }
            }
            try wiring.finish()
        }
        var lightSheet: LightSheetSpec?
        if let ln = try root.child("light_sheet") {
            let an = try ln.required("angle_deg")
            let angle = try an.double()
            guard abs(angle) >= 0.5, abs(angle) <= 89.5 else {
                throw an.error("the sheet angle must lie strictly between 0° and 90° (0.5…89.5°); found \(fmt(angle))°")
            }
            let thickness = try ln.required("thickness_um").double(in: 0.05...50, unit: " µm")
            let length = try ln.optionalDouble("length_um", in: 1...10_000, unit: " µm") ?? 50
            var scan = LightSheetSpec.Scan.stage
            if let sn = try ln.child("scan") {
                scan = try sn.choice(LightSheetSpec.Scan.self)
                if scan == .galvo, scanner == nil { throw sn.error("a galvo scan needs a scanner; the rig has none") }
            }
            if scan == .stage, stage == nil { throw ln.error("a stage scan needs a stage; the rig has none") }
            var psfFile: String?
            var psfs: [Double: String] = [:]
            if let pn = try ln.child("psf") {
                func file(_ n: ConfigNode) throws -> String {
                    let path = n.resolvePath(try n.string())
                    guard FileManager.default.fileExists(atPath: path) else {
                        throw n.error("PSF file '\(path)' does not exist")
                    }
                    return path
                }
                if case .mapping = pn.node {
                    for key in try pn.keys() {
                        guard let c = try pn.child(key) else { continue }
                        guard let nm = Double(key), nm > 0, nm < 2000 else {
                            throw c.error(
                                "the keys of psf are emission wavelengths in nm (e.g. 520: psf520.tif); found '\(key)'")
                        }
                        psfs[nm] = try file(c)
                    }
                } else {
                    psfFile = try file(pn)
                }
            }
            try ln.finish()
            lightSheet = LightSheetSpec(
                angleDeg: angle, thicknessUm: thickness, lengthUm: length, scan: scan, psfFile: psfFile,
                psfByEmissionNm: psfs)
        }
        var specimen: SpecimenSpec?
        if let sim = try root.child("simulation") {
            if let sp = try sim.child("specimen") {
                let path = sim.resolvePath(try sp.string())
                do { specimen = try SpecimenSpec.load(file: path) } catch let e as MoireError where e.kind == .io {
                    throw sp.error("cannot load specimen '\(path)': \(e.message)")
                }
            }
            try sim.finish()
        }
        try root.finish()
        return Rig(
            file: file, name: name, camera: camera, modulator: modulator, scanner: scanner, stage: stage,
            lasers: lasers, cameraTrigger: cameraTrigger, scanTrigger: scanTrigger, optics: optics, otfFile: otfFile,
            otfAttenuation: otfAttenuation, leader: leader, specimen: specimen, lightSheet: lightSheet)
    }
}
