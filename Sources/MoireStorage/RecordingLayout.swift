import Foundation
import MoireCore

/// What a recording holds: the planned grid and the run's description.
///
/// Plane order is time × channel × z × angle × phase (phase fastest), the acquisition order.
public struct RecordingLayout: Codable, Sendable, Equatable {
    public var run: String
    public var name: String
    public var mode: String
    public var channels: [String]
    public var excitationNm: [Double]
    public var emissionNm: [Double]
    public var timepoints: Int
    public var zPlanes: Int
    public var angles: Int
    public var phases: Int
    public var width: Int
    public var height: Int
    public var pixel: PixelFormat
    public var pixelSizeUm: Double
    public var zStepUm: Double
    public var objectiveNA: Double
    public var magnification: Double
    public var protocolFile: String
    public var rigFile: String
    /// When the run started, ns since the Unix epoch (OME AcquisitionDate); absent in older files.
    public var startedNs: Int64?
    /// The lasers, detector and SIM pattern geometry of the run (OME Instrument, channel
    /// settings and a map annotation); absent in older files and derived recordings.
    public var instrument: RecordingInstrument?

    public init(
        run: String, name: String, mode: String, channels: [String], excitationNm: [Double], emissionNm: [Double],
        timepoints: Int, zPlanes: Int, angles: Int, phases: Int, width: Int, height: Int, pixel: PixelFormat,
        pixelSizeUm: Double, zStepUm: Double, objectiveNA: Double, magnification: Double,
        protocolFile: String, rigFile: String, startedNs: Int64? = nil, instrument: RecordingInstrument? = nil
    ) {
        self.run = run; self.name = name; self.mode = mode; self.channels = channels; self.excitationNm = excitationNm
        self.emissionNm = emissionNm; self.timepoints = timepoints; self.zPlanes = zPlanes; self.angles = angles
        self.phases = phases; self.width = width; self.height = height; self.pixel = pixel
        self.pixelSizeUm = pixelSizeUm; self.zStepUm = zStepUm; self.objectiveNA = objectiveNA
        self.magnification = magnification; self.protocolFile = protocolFile; self.rigFile = rigFile
        self.startedNs = startedNs
        self.instrument = instrument
    }

    public var planesPerTimepoint: Int { channels.count * zPlanes * angles * phases }

    /// Throws unless every dimension is within what a recording can hold (checked arithmetic): a
    /// layout read from a file is only trusted after this.
    public func validated() throws -> RecordingLayout {
        func bad(_ what: String) -> MoireError { MoireError(.format, "recording layout: \(what)") }
        guard (1...65_536).contains(width), (1...65_536).contains(height) else {
            throw bad("plane size \(width)×\(height) is out of range")
        }
        guard (1...1_024).contains(channels.count) else { throw bad("\(channels.count) channels") }
        for (name, value) in [
            ("time points", timepoints), ("z planes", zPlanes), ("angles", angles), ("phases", phases),
        ] {
            guard (1...100_000_000).contains(value) else { throw bad("\(value) \(name)") }
        }
        var planes = channels.count
        for factor in [zPlanes, angles, phases, timepoints] {
            let (product, overflow) = planes.multipliedReportingOverflow(by: factor)
            guard !overflow, product <= 1_000_000_000 else { throw bad("more than 10⁹ planes") }
            planes = product
        }
        return self
    }
    public var planeBytes: Int { width * height * pixel.bytesPerPixel }

    /// Throws, naming `path`, unless `header` is plane `expectedIndex` of this layout (its size and
    /// pixel type) and a frame that is not missing brings `payloadBytes` = one plane. Every
    /// recording writer checks a plane with this before writing it.
    public func checkPlane(_ header: FrameHeader, payloadBytes: Int, expectedIndex: Int, path: String) throws {
        guard header.index == expectedIndex else {
            throw MoireError(
                .storage, "plane \(header.index) arrived out of order; expected plane \(expectedIndex)", place: path)
        }
        guard header.width == width, header.height == height, header.pixel == pixel else {
            throw MoireError(
                .storage,
                "plane \(header.index) is \(header.width)×\(header.height) \(header.pixel.rawValue); "
                    + "the recording is \(width)×\(height) \(pixel.rawValue)",
                place: path)
        }
        guard header.missing || payloadBytes == planeBytes else {
            throw MoireError(
                .storage, "plane \(header.index) has \(payloadBytes) bytes; expected \(planeBytes)", place: path)
        }
    }

    /// (t, c, z, angle, phase) of plane `i`.
    public func coordinates(ofPlane i: Int) -> (t: Int, c: Int, z: Int, angle: Int, phase: Int) {
        var r = i
        let phase = r % phases; r /= phases
        let angle = r % angles; r /= angles
        let z = r % zPlanes; r /= zPlanes
        let c = r % channels.count; r /= channels.count
        return (r, c, z, angle, phase)
    }
}

/// Per-plane facts kept in the OME-XML and the index.
public struct PlaneRecord: Codable, Sendable, Equatable {
    public var header: FrameHeader
    /// False for planes padded to complete the grid after a stop (never acquired).
    public var acquired: Bool
}

/// What a recording says about the instrument that made it.
public struct RecordingInstrument: Codable, Sendable, Equatable {
    /// A laser line of the rig.
    public struct Laser: Codable, Sendable, Equatable {
        public var name: String
        public var model: String
        public var wavelengthNm: Double
        public var maxPowerMw: Double
        public init(name: String, model: String, wavelengthNm: Double, maxPowerMw: Double) {
            self.name = name
            self.model = model
            self.wavelengthNm = wavelengthNm
            self.maxPowerMw = maxPowerMw
        }
    }

    /// The camera as its profile describes it.
    public struct Detector: Codable, Sendable, Equatable {
        public var model: String
        public var gainADUPerE: Double
        public var offsetADU: Double
        public var readNoiseE: Double
        public var binning: Int
        public init(model: String, gainADUPerE: Double, offsetADU: Double, readNoiseE: Double, binning: Int) {
            self.model = model
            self.gainADUPerE = gainADUPerE
            self.offsetADU = offsetADU
            self.readNoiseE = readNoiseE
            self.binning = binning
        }
    }

    /// One orientation of a channel's SIM pattern, as the modulator profile gives it.
    public struct PatternAngle: Codable, Sendable, Equatable {
        /// Wave vector in the sample, cycles/µm.
        public var kx: Double
        public var ky: Double
        /// The phase of each phase step, radians.
        public var phasesRad: [Double]
        public var modulation: Double
        public init(kx: Double, ky: Double, phasesRad: [Double], modulation: Double) {
            self.kx = kx
            self.ky = ky
            self.phasesRad = phasesRad
            self.modulation = modulation
        }
        /// The pattern's period in the sample, µm.
        public var periodUm: Double { 1 / max(hypot(kx, ky), 1e-12) }
        /// The orientation of its wave vector, degrees from x.
        public var orientationDeg: Double { atan2(ky, kx) * 180 / .pi }
    }

    public var lasers: [Laser]
    /// Per channel: the index of its laser in `lasers` (nil: none named) and the power asked (mW).
    public var channelLaser: [Int?]
    public var channelPowerMw: [Double]
    public var detector: Detector?
    /// Per channel: its pattern's orientations (empty without a pattern set).
    public var patterns: [[PatternAngle]]

    public init(
        lasers: [Laser], channelLaser: [Int?], channelPowerMw: [Double], detector: Detector?,
        patterns: [[PatternAngle]]
    ) {
        self.lasers = lasers
        self.channelLaser = channelLaser
        self.channelPowerMw = channelPowerMw
        self.detector = detector
        self.patterns = patterns
    }
}
