import Foundation
import MoireCore

/// The role a device model plays on a rig.
public enum DeviceKind: String, Sendable, CaseIterable, Codable {
    /// `trigger`: a digital output wired to the camera's trigger input (a TTL line of a controller).
    case camera, modulator, scanner, stage, laser, trigger
}

/// Driver families. Adding a device model of a known family is a new profile, not new code.
public enum DriverFamily: String, Sendable, CaseIterable, Codable {
    case sim, usb3vision, dlpc900, serialAscii = "serial-ascii"
}

/// Camera capabilities, timing and calibration from a profile.
/// The correlation `rho` of a camera's noise between a pixel and the one `dx, dy` away.
public struct NoiseLag: Sendable, Equatable {
    public var dx: Int
    public var dy: Int
    public var rho: Double

    public init(dx: Int, dy: Int, rho: Double) {
        self.dx = dx
        self.dy = dy
        self.rho = rho
    }

    /// The largest offset a profile may state along x or y.
    public static let largestOffset = 2
}

public struct CameraProfile: Sendable, Equatable {
    public var sensorWidth: Int
    public var sensorHeight: Int
    public var pixelUm: Double
    public var binning: [Int]
    public var roiMin: Int
    public var exposureMs: ClosedRange<Double>
    public var triggerModes: [String]
    public var bitDepth: Int
    /// Readout time of the full sensor height in ms (rolling shutter: scales with ROI height).
    public var readoutMs: Double
    public var offsetADU: Double
    /// ADU per photoelectron.
    public var gainADUPerE: Double
    public var readNoiseE: Double
    public var qe: Double
    public var fullWellE: Double
    /// The spatial correlation of the camera's noise (on-chip binning, demosaicing, resampling),
    /// by pixel offset; empty: pixel-independent. The denoiser synthesises its recorruption noise
    /// with it. `moire denoise --noise auto` measures it and prints the lines to paste.
    public var noiseCorrelation: [NoiseLag] = []

    /// Feature registers of a register-mapped camera (USB3 Vision), from its GenICam XML.
    public var registers: [String: CameraRegister] = [:]
    /// SHA-256 of the GenICam XML the register table was extracted from.
    public var genicamXMLSHA256: String?

    /// Readout time for an ROI `height` rows tall.
    public func readoutMs(rows: Int) -> Double { readoutMs * Double(rows) / Double(sensorHeight) }
}

/// A camera feature's register: address, and how its value is stored.
public struct CameraRegister: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case uint32, uint64, float32, float64, command }
    public var address: UInt64
    public var kind: Kind
    /// Value unit scale: register value = feature value × scale (e.g. ExposureTime in µs: 1000 per ms).
    public var scale: Double
    /// Named values of an enumeration feature (TriggerSource: software, external).
    public var values: [String: UInt32] = [:]
    public init(address: UInt64, kind: Kind, scale: Double = 1, values: [String: UInt32] = [:]) {
        self.address = address; self.kind = kind; self.scale = scale; self.values = values
    }
}

/// One pattern a modulator can show: its nominal wave vector, phase and modulation in the sample.
public struct PatternSpec: Sendable, Equatable, Codable {
    public var index: Int
    public var angle: Int
    public var phase: Int
    /// Wave vector in cycles per µm in the sample plane.
    public var kx: Double
    public var ky: Double
    public var phaseRad: Double
    public var modulation: Double
    /// Where a DMD keeps this pattern: image index in its pattern memory and bit plane.
    public var dmd: DMDImage?
    /// A three-beam (3D-SIM) pattern: the modulation of order 2 (at 2k); `modulation` is then order
    /// 1's, whose axial frequency follows from k and the wavelength. Nil: a two-beam pattern.
    public var order2Modulation: Double?

    public init(
        index: Int, angle: Int, phase: Int, kx: Double, ky: Double, phaseRad: Double, modulation: Double,
        dmd: DMDImage? = nil,
        order2Modulation: Double? = nil
    ) {
        self.index = index; self.angle = angle; self.phase = phase
        self.kx = kx; self.ky = ky; self.phaseRad = phaseRad; self.modulation = modulation; self.dmd = dmd
        self.order2Modulation = order2Modulation
    }
}

/// A DMD's mirror array and its image in the sample: what pattern generation needs. With `upload`,
/// the driver generates every pattern's binary grating and uploads them (pattern-on-the-fly mode)
/// instead of using images flashed into the controller.
public struct DMDGeometry: Sendable, Equatable {
    public var width: Int, height: Int
    /// Sample µm per mirror through the illumination optics.
    public var sampleUmPerMirror: Double
    public var upload: Bool
    public init(width: Int, height: Int, sampleUmPerMirror: Double, upload: Bool) {
        self.width = width; self.height = height; self.sampleUmPerMirror = sampleUmPerMirror; self.upload = upload
    }
}

/// A binary pattern in a DMD controller's pattern memory: image index (24-bit image) and bit plane.
public struct DMDImage: Sendable, Equatable, Hashable, Codable {
    public var image: Int
    public var bit: Int
    public init(image: Int, bit: Int) { self.image = image; self.bit = bit }
}

/// A named set of patterns for one excitation wavelength.
public struct PatternSet: Sendable, Equatable {
    public var name: String
    public var wavelengthNm: Double
    public var patterns: [PatternSpec]

    public var angles: Int { (patterns.map(\.angle).max() ?? -1) + 1 }
    public var phases: Int { (patterns.map(\.phase).max() ?? -1) + 1 }
    public func pattern(angle: Int, phase: Int) -> PatternSpec? {
        patterns.first { $0.angle == angle && $0.phase == phase }
    }
}

public struct ModulatorProfile: Sendable, Equatable {
    public var sequenceMax: Int
    public var triggerOut: Bool
    public var settleMs: Double
    public var patternSets: [PatternSet]
    /// The DMD image that lights the whole field (widefield, pattern −1).
    public var uniformDMD: DMDImage?
    /// The mirror array, for generated and uploaded patterns.
    public var dmdGeometry: DMDGeometry?
    public func patternSet(named name: String) -> PatternSet? { patternSets.first { $0.name == name } }
    /// The pattern with this index, in any set.
    public func pattern(index: Int) -> PatternSpec? {
        for s in patternSets { if let p = s.patterns.first(where: { $0.index == index }) { return p } }
        return nil
    }
}

public struct ScannerProfile: Sendable, Equatable {
    public var rangeV: ClosedRange<Double>
    public var parkV: Double
    public var umPerV: Double
    public var settleMs: Double
}

public struct StageProfile: Sendable, Equatable {
    public var rangeUm: ClosedRange<Double>
    public var homeUm: Double
    public var settleMs: Double
}

public struct LaserProfile: Sendable, Equatable {
    public var wavelengthNm: Double
    public var maxPowerMw: Double
    public var ttl: Bool
}

/// A device profile: one YAML file per device model.
public struct DeviceProfile: Sendable, Equatable {
    public var file: String
    public var kind: DeviceKind
    public var model: String
    public var driver: DriverFamily
    /// Driver-specific connection settings (USB ids, serial port), as text.
    public var connection: [String: String]
    public var camera: CameraProfile?
    public var modulator: ModulatorProfile?
    public var scanner: ScannerProfile?
    public var stage: StageProfile?
    public var laser: LaserProfile?
    /// Commands of a device on a serial (ASCII line) controller (`driver: serial-ascii`).
    public var serial: SerialProfile?
    /// Simulated fault behaviour or driver tables, as text (driver-specific).
    public var extra: [String: String]

    /// Loads and validates a profile file.
    public static func load(file: String) throws -> DeviceProfile {
        try ConfigNode.withParsingLock { try parse(ConfigNode.load(file: file)) }
    }

    public static func parse(_ root: ConfigNode) throws -> DeviceProfile {
        try root.checkVersion()
        let kind = try root.required("kind").choice(DeviceKind.self)
        let model = try root.required("model").string()
        let driver = try root.required("driver").choice(DriverFamily.self)
        let connection = try root.child("connection")?.stringMap() ?? [:]
        let extra = try root.child("driver_options")?.stringMap() ?? [:]
        var p = DeviceProfile(
            file: root.file, kind: kind, model: model, driver: driver, connection: connection, extra: extra)
        switch kind {
        case .camera: p.camera = try parseCamera(root)
        case .modulator: p.modulator = try parseModulator(root)
        case .scanner: p.scanner = try parseScanner(root)
        case .stage: p.stage = try parseStage(root)
        case .laser: p.laser = try parseLaser(root)
        case .trigger:
            guard driver == .serialAscii else {
                throw try root.required("driver").error("a trigger line is driven by serial-ascii")
            }
        }
        if let sn = try root.child("serial") {
            guard driver == .serialAscii else { throw sn.error("a serial block needs driver serial-ascii") }
            guard kind != .camera, kind != .modulator else {
                throw sn.error("serial-ascii drives scanners, stages and lasers, not a \(kind.rawValue)")
            }
            p.serial = try SerialProfile.parse(sn, kind: kind)
        } else if driver == .serialAscii {
            throw MoireError(
                .config, "driver serial-ascii needs a serial block with the controller's commands", place: root.place)
        }
        if driver == .dlpc900 {
            guard kind == .modulator, let m = p.modulator else {
                throw try root.required("driver").error("driver dlpc900 drives modulators only")
            }
            let unmapped = m.patternSets.flatMap(\.patterns).filter { $0.dmd == nil }.map(\.index)
            guard unmapped.isEmpty else {
                throw MoireError(
                    .config,
                    "driver dlpc900: patterns \(unmapped.map(String.init).joined(separator: ", ")) have no dmd: [image, bit]",
                    place: root.place)
            }
            guard m.uniformDMD != nil else {
                throw MoireError(
                    .config, "driver dlpc900 needs dmd_uniform: [image, bit] (the all-on image for widefield)",
                    place: root.place)
            }
        }
        try root.finish()
        return p
    }

    private static func range(_ node: ConfigNode, within limits: ClosedRange<Double>, unit: String) throws
        -> ClosedRange<Double>
    {
        let v = try node.doubles(count: 2)
        guard v[0] <= v[1] else {
            throw node.error("expected [min, max] with min ≤ max, found [\(fmt(v[0])), \(fmt(v[1]))]")
        }
        guard limits.contains(v[0]), limits.contains(v[1]) else {
            throw node.error("expected values within \(fmt(limits.lowerBound))…\(fmt(limits.upperBound))\(unit)")
        }
        return v[0]...v[1]
    }

    private static func parseCamera(_ root: ConfigNode) throws -> CameraProfile {
        let cap = try root.required("capabilities")
        let sensorNode = try cap.required("sensor")
        let sensor = try sensorNode.ints(count: 2)
        guard sensor.allSatisfy({ (1...16384).contains($0) }) else {
            throw sensorNode.error("sensor size must be 1…16384 pixels")
        }
        let pixelUm = try cap.required("pixel_um").double(in: 0.1...100, unit: " µm")
        let binning = try cap.child("binning")?.ints() ?? [1]
        let roiMin = try cap.optionalInt("roi_min", in: 1...16384) ?? 16
        let exposure = try range(cap.required("exposure_ms"), within: 0.001...3_600_000, unit: " ms")
        let triggers = try cap.child("trigger_modes")?.strings() ?? ["internal", "software"]
        let bitDepth = try cap.optionalInt("bit_depth", in: 8...16) ?? 16
        try cap.finish()
        let timing = try root.required("timing")
        let readout = try timing.required("readout_ms").double(in: 0...10_000, unit: " ms")
        try timing.finish()
        let cal = try root.required("calibration")
        let offset = try cal.required("offset_adu").double(in: 0...65535, unit: " ADU")
        let gain = try cal.required("gain_adu_per_e").double(in: 0.001...1000, unit: " ADU/e⁻")
        let read = try cal.required("read_noise_e").double(in: 0...1000, unit: " e⁻")
        let qe = try cal.optionalDouble("qe", in: 0.01...1) ?? 0.8
        let fullWell = try cal.optionalDouble("full_well_e", in: 1...10_000_000, unit: " e⁻") ?? 30000
        var correlation: [NoiseLag] = []
        if let cn = try cal.child("noise_correlation") {
            let limit = NoiseLag.largestOffset
            for key in try cn.keys() {
                let node = try cn.required(key)
                let parts = key.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard parts.count == 2, let dx = parts[0], let dy = parts[1], abs(dx) <= limit, abs(dy) <= limit,
                    dx != 0 || dy != 0
                else {
                    throw node.error(
                        "noise_correlation keys are pixel offsets \"dx,dy\" with |dx|, |dy| ≤ \(limit), not 0,0; found '\(key.prefix(20))'"
                    )
                }
                // One of each ± pair: (dx, dy) and (−dx, −dy) are the same lag.
                let (x, y) = dy > 0 || (dy == 0 && dx > 0) ? (dx, dy) : (-dx, -dy)
                guard !correlation.contains(where: { $0.dx == x && $0.dy == y }) else {
                    throw node.error(
                        "noise_correlation gives the offset \(x),\(y) twice (as itself and as \(-x),\(-y))")
                }
                correlation.append(NoiseLag(dx: x, dy: y, rho: try node.double(in: -0.99...0.99)))
            }
        }
        try cal.finish()
        var profile = CameraProfile(
            sensorWidth: sensor[0], sensorHeight: sensor[1], pixelUm: pixelUm, binning: binning,
            roiMin: roiMin, exposureMs: exposure, triggerModes: triggers, bitDepth: bitDepth,
            readoutMs: readout, offsetADU: offset, gainADUPerE: gain, readNoiseE: read, qe: qe,
            fullWellE: fullWell)
        profile.noiseCorrelation = correlation
        if let rn = try root.child("registers") {
            for name in try rn.keys() {
                let entry = try rn.required(name)
                let an = try entry.required("address")
                let text = try an.string()
                let parsed = text.lowercased().hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
                guard let address = parsed else {
                    throw an.error("register address must be a number or 0x… hex; found '\(text)'")
                }
                let kind = try entry.required("type").choice(CameraRegister.Kind.self)
                let scale = try entry.optionalDouble("scale", in: 1e-12...1e12) ?? 1
                var values: [String: UInt32] = [:]
                if let vn = try entry.child("values") {
                    for k in try vn.keys() { values[k] = UInt32(try vn.required(k).int(in: 0...Int(UInt32.max))) }
                }
                try entry.finish()
                profile.registers[name] = CameraRegister(address: address, kind: kind, scale: scale, values: values)
            }
        }
        if let hn = try root.child("genicam_xml_sha256") {
            let h = try hn.string()
            guard h.count == 64, h.allSatisfy(\.isHexDigit) else {
                throw hn.error("genicam_xml_sha256 must be 64 hex digits")
            }
            profile.genicamXMLSHA256 = h
        }
        return profile
    }

    private static func parseModulator(_ root: ConfigNode) throws -> ModulatorProfile {
        let cap = try root.required("capabilities")
        let seqMax = try cap.optionalInt("sequence_max", in: 0...1_000_000) ?? 0
        let trigOut = try cap.optionalBool("trigger_out") ?? false
        try cap.finish()
        let timing = try root.child("timing")
        let settle = try timing?.optionalDouble("settle_ms", in: 0...10_000, unit: " ms") ?? 0
        try timing?.finish()
        var sets: [PatternSet] = []
        if let setsNode = try root.child("pattern_sets") {
            for setNode in try setsNode.list() {
                let name = try setNode.required("name").string()
                if sets.contains(where: { $0.name == name }) {
                    throw setNode.error("duplicate pattern set name '\(name)'")
                }
                let wl = try setNode.required("wavelength_nm").double(in: 200...2000, unit: " nm")
                // Three-beam (3D-SIM) sets state order 2's modulation.
                let m2 = try setNode.optionalDouble("order2_modulation", in: 0...1)
                var patterns: [PatternSpec] = []
                for pn in try setNode.required("patterns").list() {
                    let spec = PatternSpec(
                        index: try pn.required("index").int(in: 0...1_000_000),
                        angle: try pn.required("angle").int(in: 0...64),
                        phase: try pn.required("phase").int(in: 0...64),
                        kx: try pn.required("kx_per_um").double(in: -100...100, unit: " µm⁻¹"),
                        ky: try pn.required("ky_per_um").double(in: -100...100, unit: " µm⁻¹"),
                        phaseRad: try pn.required("phase_rad").double(in: -100...100, unit: " rad"),
                        modulation: try pn.required("modulation").double(in: 0...1),
                        dmd: try pn.child("dmd").map(parseDMD), order2Modulation: m2)
                    try pn.finish()
                    if patterns.contains(where: { $0.angle == spec.angle && $0.phase == spec.phase }) {
                        throw pn.error("pattern for angle \(spec.angle), phase \(spec.phase) is listed twice")
                    }
                    patterns.append(spec)
                }
                try setNode.finish()
                sets.append(PatternSet(name: name, wavelengthNm: wl, patterns: patterns))
            }
        }
        let uniform = try root.child("dmd_uniform").map(parseDMD)
        var geometry: DMDGeometry?
        if let gn = try root.child("dmd_geometry") {
            let mn = try gn.required("mirrors")
            let m = try mn.ints(count: 2)
            guard (1...4096).contains(m[0]), (1...4096).contains(m[1]) else {
                throw mn.error("mirrors must be [width, height], 1…4096 each")
            }
            let s = try gn.required("sample_um_per_mirror").double(in: 1e-4...100, unit: " µm")
            let upload = try gn.optionalBool("upload") ?? false
            try gn.finish()
            geometry = DMDGeometry(width: m[0], height: m[1], sampleUmPerMirror: s, upload: upload)
            // Each generated grating must be resolvable: at least 2 mirrors per period.
            for p in sets.flatMap(\.patterns) where hypot(p.kx, p.ky) * s > 0.5 {
                throw gn.error(
                    "pattern \(p.index) has a period of \(String(format: "%.2f", 1 / (hypot(p.kx, p.ky) * s))) mirrors; at least 2 are needed"
                )
            }
        }
        return ModulatorProfile(
            sequenceMax: seqMax, triggerOut: trigOut, settleMs: settle, patternSets: sets, uniformDMD: uniform,
            dmdGeometry: geometry)
    }

    /// `[image, bit]`: image index 0…2047 (11 bits), bit plane 0…23.
    private static func parseDMD(_ n: ConfigNode) throws -> DMDImage {
        let v = try n.ints(count: 2)
        guard (0...2047).contains(v[0]) else { throw n.error("DMD image index must be 0…2047; found \(v[0])") }
        guard (0...23).contains(v[1]) else { throw n.error("DMD bit plane must be 0…23; found \(v[1])") }
        return DMDImage(image: v[0], bit: v[1])
    }

    private static func parseScanner(_ root: ConfigNode) throws -> ScannerProfile {
        let cap = try root.required("capabilities")
        let r = try range(cap.required("range_v"), within: -100...100, unit: " V")
        let parkNode = try cap.required("park_v")
        let park = try parkNode.double()
        guard r.contains(park) else { throw parkNode.error("park voltage \(fmt(park)) V lies outside range_v") }
        try cap.finish()
        let timing = try root.child("timing")
        let settle = try timing?.optionalDouble("settle_ms", in: 0...10_000, unit: " ms") ?? 0
        try timing?.finish()
        let cal = try root.required("calibration")
        let umPerV = try cal.required("um_per_v").double(in: -10_000...10_000, unit: " µm/V")
        try cal.finish()
        return ScannerProfile(rangeV: r, parkV: park, umPerV: umPerV, settleMs: settle)
    }

    private static func parseStage(_ root: ConfigNode) throws -> StageProfile {
        let cap = try root.required("capabilities")
        let r = try range(cap.required("range_um"), within: -100_000...100_000, unit: " µm")
        let homeNode = try cap.child("home_um")
        let home = try homeNode?.double() ?? r.lowerBound
        if let homeNode, !r.contains(home) { throw homeNode.error("home position lies outside range_um") }
        try cap.finish()
        let timing = try root.child("timing")
        let settle = try timing?.optionalDouble("settle_ms", in: 0...10_000, unit: " ms") ?? 0
        try timing?.finish()
        return StageProfile(rangeUm: r, homeUm: home, settleMs: settle)
    }

    private static func parseLaser(_ root: ConfigNode) throws -> LaserProfile {
        let cap = try root.required("capabilities")
        let wl = try cap.required("wavelength_nm").double(in: 200...2000, unit: " nm")
        let maxP = try cap.required("max_power_mw").double(in: 0.001...100_000, unit: " mW")
        let ttl = try cap.optionalBool("ttl") ?? true
        try cap.finish()
        return LaserProfile(wavelengthNm: wl, maxPowerMw: maxP, ttl: ttl)
    }
}
