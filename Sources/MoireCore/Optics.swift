/// Detection optics of a rig, enough to model the OTF and the pixel size in the sample.
public struct Optics: Codable, Sendable, Equatable {
    public var objectiveNA: Double
    public var magnification: Double
    public var immersionIndex: Double
    /// Tube lens focal length in millimetres (nil: the objective's nominal).
    public var tubeLensMm: Double?

    public init(objectiveNA: Double, magnification: Double, immersionIndex: Double, tubeLensMm: Double? = nil) {
        self.objectiveNA = objectiveNA
        self.magnification = magnification
        self.immersionIndex = immersionIndex
        self.tubeLensMm = tubeLensMm
    }

    /// Pixel size in the sample, µm, for a camera pixel of `cameraPixelUm` µm and binning.
    public func samplePixelUm(cameraPixelUm: Double, binning: Int = 1) -> Double {
        cameraPixelUm * Double(binning) / magnification
    }

    /// Incoherent cutoff frequency 2·NA/λ in cycles per µm.
    public func cutoffPerUm(emissionNm: Double) -> Double {
        2 * objectiveNA / (emissionNm / 1000)
    }
}
