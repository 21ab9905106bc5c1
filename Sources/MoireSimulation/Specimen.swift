import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireStorage

/// A 2D fluorescent specimen rendered as dye density on a fine grid (procedural, seeded, or from a TIFF).
public enum SpecimenRenderer {
    /// Dye density (per fine pixel) on a `width`×`height` grid of `pixelUm` pixels centred on the optical axis.
    public static func render(_ spec: SpecimenSpec, width: Int, height: Int, pixelUm: Double) throws -> [Float] {
        var d = [Float](repeating: 0, count: width * height)
        if spec.kind == .tiff {
            return try renderTIFF(spec, width: width, height: height, pixelUm: pixelUm)
        }
        var rng = SimRandom(seed: spec.seed)
        let fieldW = Double(width) * pixelUm
        let fieldH = Double(height) * pixelUm
        func splat(_ xUm: Double, _ yUm: Double, _ w: Float) {
            let fx = xUm / pixelUm + Double(width) / 2
            let fy = yUm / pixelUm + Double(height) / 2
            let x0 = Int(floor(fx))
            let y0 = Int(floor(fy))
            let ax = Float(fx - Double(x0))
            let ay = Float(fy - Double(y0))
            for (dx, wx) in [(0, 1 - ax), (1, ax)] {
                for (dy, wy) in [(0, 1 - ay), (1, ay)] {
                    let x = x0 + dx
                    let y = y0 + dy
                    if x >= 0, x < width, y >= 0, y < height { d[y * width + x] += w * wx * wy }
                }
            }
        }
        // Filaments: worm-like chains (persistence ~5 µm), 0.02 µm steps.
        let step = 0.02
        for _ in 0..<spec.filaments {
            var x = (rng.uniform() - 0.5) * fieldW * 1.2
            var y = (rng.uniform() - 0.5) * fieldH * 1.2
            var theta = rng.uniform() * 2 * .pi
            let length = 5 + rng.uniform() * 25
            let weight = Float(0.6 + 0.8 * rng.uniform()) * Float(step) * 8
            var s = 0.0
            while s < length {
                splat(x, y, weight)
                theta += rng.normal() * (step / 5).squareRoot()
                x += step * cos(theta); y += step * sin(theta); s += step
            }
        }
        // Puncta: point-like vesicles.
        for _ in 0..<spec.puncta {
            let x = (rng.uniform() - 0.5) * fieldW
            let y = (rng.uniform() - 0.5) * fieldH
            splat(x, y, Float(0.1 + 0.3 * rng.uniform()))
        }
        return d
    }

    private static func renderTIFF(_ spec: SpecimenSpec, width: Int, height: Int, pixelUm: Double) throws -> [Float] {
        guard let path = spec.tiffPath, let srcPixel = spec.tiffPixelUm else {
            throw MoireError(.config, "tiff specimen needs a file", place: spec.file)
        }
        let r = try OMETiffReader(path: path)
        let src = try r.readPlaneFloat(0)
        let peak = max(src.max() ?? 1, 1e-6)
        var d = [Float](repeating: 0, count: width * height)
        // Nearest-neighbour resampling, centred; density scaled by the pixel area ratio.
        let area = Float((pixelUm * pixelUm) / (srcPixel * srcPixel))
        for y in 0..<height {
            for x in 0..<width {
                let sx = Int(
                    ((Double(x) - Double(width) / 2) * pixelUm / srcPixel + Double(r.width) / 2).rounded(.down))
                let sy = Int(
                    ((Double(y) - Double(height) / 2) * pixelUm / srcPixel + Double(r.height) / 2).rounded(.down))
                if sx >= 0, sx < r.width, sy >= 0, sy < r.height {
                    d[y * width + x] = src[sy * r.width + sx] / peak * area * 0.05
                }
            }
        }
        return d
    }
}
