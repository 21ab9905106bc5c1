import Foundation

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

/// The geometry of a sample-scan light-sheet stack (lattice light-sheet): the stage steps the sample
/// by `stepUm` along the scan direction, which makes `angleDeg` with the camera's x axis in the
/// detection objective's frame. Plane i therefore sees the sample shifted by i·step·cos θ along x
/// and i·step·sin θ along the detection axis: deskewing shifts plane i by i·step·cos θ / pixel pixels,
/// and the deskewed planes are step·|sin θ| apart.
public struct LightSheetGeometry: Sendable, Codable, Equatable {
    public var angleDeg: Double
    public var stepUm: Double
    public var pixelUm: Double

    public init(angleDeg: Double, stepUm: Double, pixelUm: Double) throws {
        guard angleDeg.isFinite, abs(angleDeg) > 0.5, abs(angleDeg) < 89.5 else {
            throw MoireError(
                .usage,
                "the sheet angle must lie strictly between 0° and 90° (0.5°…89.5°); got \(angleDeg)°: at 0° the planes coincide in depth, at 90° there is nothing to deskew"
            )
        }
        guard stepUm.isFinite, stepUm > 0 else {
            throw MoireError(.usage, "the scan step must be positive; got \(stepUm) µm")
        }
        guard pixelUm.isFinite, pixelUm > 0 else {
            throw MoireError(.usage, "the pixel size must be positive; got \(pixelUm) µm")
        }
        self.angleDeg = angleDeg; self.stepUm = stepUm; self.pixelUm = pixelUm
    }

    var theta: Double { angleDeg * .pi / 180 }
    /// Deskew shift of plane i, in pixels: i · shiftPerPlane.
    public var shiftPerPlane: Double { stepUm * cos(theta) / pixelUm }
    /// Spacing of the deskewed planes along the detection axis, µm.
    public var planeSpacingUm: Double { stepUm * abs(sin(theta)) }
    /// Width of the deskewed volume: nx + ⌊nz·step·|cos θ| / pixel⌋.
    public func deskewedWidth(nx: Int, nz: Int) -> Int {
        nx + Int((Double(nz) * stepUm * abs(cos(theta)) / pixelUm).rounded(.down))
    }
}

/// The Gaussian model of a light-sheet microscope's overall PSF in the deskewed (detection) frame:
/// lateral σ = 0.21 λ/NA (Zhang et al. 2007); along the detection axis the detection PSF (FWHM
/// 0.88 λ / (n − √(n² − NA²))) times the sheet's profile (FWHM = its thickness), Gaussians whose
/// product has 1/σz² = 1/σdet² + 1/σsheet².
public struct LightSheetOptics: Sendable, Codable, Equatable {
    public var na: Double
    public var immersionIndex: Double
    public var emissionNm: Double
    public var sheetThicknessUm: Double

    public init(
        na: Double = 1.1, immersionIndex: Double = 1.33, emissionNm: Double = 520, sheetThicknessUm: Double = 1.0
    ) throws {
        guard na > 0, na < immersionIndex, emissionNm > 0, sheetThicknessUm > 0 else {
            throw MoireError(
                .usage, "light-sheet optics need 0 < NA < n, a positive wavelength and a positive sheet thickness")
        }
        self.na = na; self.immersionIndex = immersionIndex; self.emissionNm = emissionNm;
        self.sheetThicknessUm = sheetThicknessUm
    }

    public var sigmaLateralUm: Double { 0.21 * emissionNm / 1000 / na }
    public var sigmaAxialUm: Double {
        let n = immersionIndex
        let lam = emissionNm / 1000
        let det = 0.88 * lam / (n - (n * n - na * na).squareRoot()) / 2.3548
        let sheet = sheetThicknessUm / 2.3548
        return 1 / (1 / (det * det) + 1 / (sheet * sheet)).squareRoot()
    }
}

/// A three-beam (3D-SIM) pattern: a centre beam along the axis and two side beams whose lateral
/// frequency is order 1's k. Order 1 is modulated axially at kz = n/λ − √((n/λ)² − k²) (the centre
/// beam's axial frequency minus the side beams'); order 2 (at 2k) is not.
public enum ThreeBeam {
    /// Order 1's axial frequency (cycles/µm) for lateral frequency `kUm` at `excitationNm` in
    /// `immersionIndex`; nil when side beams of that k cannot propagate (k ≥ n/λ).
    public static func kz(kUm: Double, excitationNm: Double, immersionIndex: Double) -> Double? {
        let kn = immersionIndex / (excitationNm / 1000)
        guard kUm >= 0, kUm < kn else { return nil }
        return kn - (kn * kn - kUm * kUm).squareRoot()
    }
}
