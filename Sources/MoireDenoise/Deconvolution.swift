import Foundation
import MoireCore

/// The deconvolution term of ZS-DeconvNet for widefield and light-sheet data: the network's output
/// x is taken as the deconvolved image, and training minimises
///
///     mean((PSF ⊛ x − ỹ)²) + λ · mean((∂xx x)² + (∂yy x)² + 2 (∂xy x)²)
///
/// against the (recorrupted or paired) target ỹ: the output blurred by the PSF must explain the
/// data, and the Hessian penalty keeps it from amplifying noise. The convolution is "same"-sized
/// with zero padding; its adjoint (a correlation) gives the gradient. Second differences are taken
/// where all their taps lie inside the image.
public struct DeconvolutionLoss: Sendable {
    /// An odd square kernel, `size × size`, normalised to sum 1.
    public let psf: [Float]
    public let size: Int
    public var hessianWeight: Float

    public init(psf: [Float], size: Int, hessianWeight: Float = 0.02) throws {
        guard size % 2 == 1, size >= 1, psf.count == size * size else {
            throw MoireError(.usage, "the PSF must be an odd square kernel; got \(psf.count) values for side \(size)")
        }
        let sum = psf.reduce(0, +)
        guard sum.isFinite, sum > 0, psf.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw MoireError(.usage, "the PSF must be finite, non-negative and not all zero")
        }
        guard hessianWeight >= 0, hessianWeight.isFinite else {
            throw MoireError(.usage, "the Hessian weight must be ≥ 0")
        }
        self.psf = psf.map { $0 / sum }; self.size = size; self.hessianWeight = hessianWeight
    }

    /// A sampled Gaussian PSF of standard deviation `sigmaPx`, out to 3σ.
    public static func gaussian(sigmaPx: Double, hessianWeight: Float = 0.02) throws -> DeconvolutionLoss {
        guard sigmaPx > 0 else { throw MoireError(.usage, "the PSF width must be positive") }
        let r = max(1, Int((3 * sigmaPx).rounded(.up)))
        let n = 2 * r + 1
        let k = (0..<(n * n)).map { i -> Float in
            let x = Double(i % n - r)
            let y = Double(i / n - r)
            return Float(exp(-(x * x + y * y) / (2 * sigmaPx * sigmaPx)))
        }
        return try DeconvolutionLoss(psf: k, size: n, hessianWeight: hessianWeight)
    }

    /// The widefield PSF model: the Gaussian that best fits the Airy disk, σ = 0.21 λ / NA
    /// (Zhang, Zerubia & Olivo-Marin 2007), in pixels of `pixelUm`.
    public static func widefield(na: Double, emissionNm: Double, pixelUm: Double, hessianWeight: Float = 0.02) throws
        -> DeconvolutionLoss
    {
        guard na > 0, emissionNm > 0, pixelUm > 0 else {
            throw MoireError(.usage, "NA, emission wavelength and pixel size must be positive")
        }
        return try gaussian(sigmaPx: 0.21 * emissionNm / 1000 / na / pixelUm, hessianWeight: hessianWeight)
    }

    /// Zero-padded "same" correlation (`flip` false) or convolution (`flip` true) of one plane with the PSF.
    func filter(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, width w: Int, height h: Int, flip: Bool)
    {
        let r = size / 2
        for y in 0..<h {
            for xx in 0..<w {
                var s: Float = 0
                for ky in -r...r {
                    let sy = y + ky
                    guard sy >= 0, sy < h else { continue }
                    for kx in -r...r {
                        let sx = xx + kx
                        guard sx >= 0, sx < w else { continue }
                        let k = flip ? psf[(r - ky) * size + (r - kx)] : psf[(ky + r) * size + (kx + r)]
                        s += k * x[sy * w + sx]
                    }
                }
                out[y * w + xx] = s
            }
        }
    }

    /// The loss of outputs `x` (`batch` planes of `width × height`) against `target`, and its gradient in `grad`.
    public func evaluate(
        _ x: UnsafePointer<Float>, target: UnsafePointer<Float>, batch: Int, width w: Int, height h: Int,
        grad: UnsafeMutablePointer<Float>
    ) -> Double {
        let n = w * h
        let total = Double(batch * n)
        var loss = 0.0
        var blurred = [Float](repeating: 0, count: n)
        var residual = [Float](repeating: 0, count: n)
        for b in 0..<batch {
            let xb = x + b * n
            let tb = target + b * n
            let gb = grad + b * n
            // Data term: PSF ⊛ x against the target; gradient through the adjoint (the flipped kernel).
            blurred.withUnsafeMutableBufferPointer { bl in
                filter(xb, bl.baseAddress!, width: w, height: h, flip: true)
                for i in 0..<n { residual[i] = bl[i] - tb[i]; loss += Double(residual[i] * residual[i]) }
            }
            residual.withUnsafeBufferPointer { filter($0.baseAddress!, gb, width: w, height: h, flip: false) }
            for i in 0..<n { gb[i] *= Float(2 / total) }
            // Hessian penalty: second differences and their adjoints.
            guard hessianWeight > 0 else { continue }
            let c = Float(2 / total) * hessianWeight
            for y in 0..<h {
                for xx in 0..<w {
                    let i = y * w + xx
                    if xx >= 1, xx + 1 < w {
                        let d = xb[i - 1] - 2 * xb[i] + xb[i + 1]
                        loss += Double(hessianWeight * d * d)
                        gb[i - 1] += c * d; gb[i] -= 2 * c * d; gb[i + 1] += c * d
                    }
                    if y >= 1, y + 1 < h {
                        let d = xb[i - w] - 2 * xb[i] + xb[i + w]
                        loss += Double(hessianWeight * d * d)
                        gb[i - w] += c * d; gb[i] -= 2 * c * d; gb[i + w] += c * d
                    }
                    if xx + 1 < w, y + 1 < h {
                        let d = xb[i + w + 1] - xb[i + 1] - xb[i + w] + xb[i]
                        loss += Double(2 * hessianWeight * d * d)
                        gb[i + w + 1] += 2 * c * d; gb[i + 1] -= 2 * c * d; gb[i + w] -= 2 * c * d; gb[i] += 2 * c * d
                    }
                }
            }
        }
        return loss / total
    }
}
