import Foundation
import MoireCore
import MoireStorage

/// A rotationally symmetric detection OTF, as a function of spatial frequency (cycles/µm).
public protocol RadialOTF: Sendable {
    /// OTF magnitude at radial frequency `f` (cycles/µm); 1 at 0, 0 beyond the cutoff.
    func value(_ f: Double) -> Double
    /// Highest frequency with a non-zero value (cycles/µm).
    var cutoff: Double { get }
    /// Whether the camera pixels' integration is part of it (a measured OTF: imaged beads), or
    /// still to be applied to what the camera records (the ideal OTF of the optics alone).
    var includesPixelIntegration: Bool { get }
}

/// The ideal incoherent OTF of a circular pupil, optionally attenuated for real objectives.
///
/// `OTF(ρ) = (2/π)(acos ρ − ρ√(1−ρ²)) · a^ρ`, ρ = f/fc, fc = 2·NA/λ; `a` = 1 is ideal, smaller
/// values mimic the extra fall-off of a real objective (fairSIM's "compensation").
public struct IdealOTF: RadialOTF {
    public let na: Double
    /// As given (the wavelength is derived from it).
    public let emissionNm: Double
    public let wavelengthUm: Double
    public let attenuation: Double
    public var cutoff: Double { 2 * na / wavelengthUm }
    public var includesPixelIntegration: Bool { false }

    public init(na: Double, emissionNm: Double, attenuation: Double = 1) {
        self.na = na
        self.emissionNm = emissionNm
        wavelengthUm = emissionNm / 1000
        self.attenuation = attenuation
    }

    public func value(_ f: Double) -> Double {
        let r = abs(f) / cutoff
        if r >= 1 { return 0 }
        return 2 / .pi * (acos(r) - r * (1 - r * r).squareRoot()) * pow(attenuation, r)
    }
}

/// A measured OTF, radially averaged, sampled every `step` cycles/µm from 0 (linear interpolation).
public struct MeasuredRadialOTF: RadialOTF {
    public let samples: [Double]
    public let step: Double
    public let cutoff: Double
    public var includesPixelIntegration: Bool { true }

    public init(samples: [Double], step: Double) throws {
        guard samples.count >= 4, step > 0, samples[0] > 0 else {
            throw MoireError(
                .format, "a radial OTF needs at least 4 samples, a positive step and a non-zero value at 0")
        }
        let s0 = samples[0]
        self.samples = samples.map { max(0, $0 / s0) }
        self.step = step
        let last = self.samples.lastIndex(where: { $0 > 2e-3 }) ?? (samples.count - 1)
        cutoff = Double(last + 1) * step
    }

    public func value(_ f: Double) -> Double {
        let x = abs(f) / step
        let i = Int(x)
        if i >= samples.count - 1 { return 0 }
        let t = x - Double(i)
        return samples[i] * (1 - t) + samples[i + 1] * t
    }

    /// Loads a measured OTF from TIFF or MRC: a radially averaged line (complex or real, as in
    /// shared/data), a 2D OTF image centred in its frame (radially averaged here), or a 3D OTF
    /// stack (its kz planes summed first: the in-focus 2D OTF). The frequency step per sample comes
    /// from `step`, or from an MRC header's cell size over grid size.
    public static func load(_ path: String, step: Double? = nil) throws -> MeasuredRadialOTF {
        let s = try ImageImport.load(path)
        if s.height == 1 && s.planes.count == 1 { return try loadMRC(path, step: step) }
        guard s.width == s.height, s.width >= 8 else {
            throw MoireError(
                .format, "a 2D or 3D OTF must be square and at least 8 pixels; found \(s.width)×\(s.height)",
                place: path)
        }
        guard let st = step ?? (path.lowercased().hasSuffix(".mrc") ? s.pixelSizeUm : nil), st > 0 else {
            throw MoireError(
                .usage,
                "give the OTF's frequency step per pixel (cycles/µm) for \((path as NSString).lastPathComponent)",
                place: path)
        }
        let n = s.width
        let c = Double(n / 2)
        var sum = [Double](repeating: 0, count: n / 2 + 1)
        var count = sum
        for plane in s.planes {
            for y in 0..<n {
                for x in 0..<n {
                    let r = Int(hypot(Double(x) - c, Double(y) - c).rounded())
                    guard r <= n / 2 else { continue }
                    let v: Double =
                        s.isComplex
                        ? Double(hypot(plane[2 * (y * n + x)], plane[2 * (y * n + x) + 1]))
                        : Double(abs(plane[y * n + x]))
                    sum[r] += v; count[r] += 1
                }
            }
        }
        let radial = zip(sum, count).map { $1 > 0 ? $0 / $1 : 0 }
        do { return try MeasuredRadialOTF(samples: radial, step: st) } catch let e as MoireError {
            throw MoireError(e.kind, e.message, place: path)
        }
    }

    /// Loads a radially averaged OTF stored as an MRC line (complex or real); the step comes from the
    /// header's cell size over grid size, or from `step` when given.
    public static func loadMRC(_ path: String, step: Double? = nil) throws -> MeasuredRadialOTF {
        let s = try ImageImport.loadMRC(path)
        guard s.height == 1, s.planes.count == 1 else {
            throw MoireError(
                .format, "expected a radial OTF (one line of samples); found \(s.width)×\(s.height)×\(s.planes.count)",
                place: path)
        }
        let p = s.planes[0]
        let values: [Double] =
            s.isComplex
            ? stride(from: 0, to: p.count, by: 2).map { Double(hypot(p[$0], p[$0 + 1])) }
            : p.map(Double.init)
        guard let st = step ?? s.pixelSizeUm, st > 0 else {
            throw MoireError(.format, "the OTF file states no frequency step; give one", place: path)
        }
        do { return try MeasuredRadialOTF(samples: values, step: st) } catch let e as MoireError {
            throw MoireError(e.kind, e.message, place: path)
        }
    }
}
