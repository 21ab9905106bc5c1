import Foundation
import MoireFFT
import MoireSimulation
import Testing

@testable import MoireReconstruction

@Suite struct SIM3DKernelTests {
    /// Per-frame phases pulled by an error that goes once around the phases (order 2's leak in
    /// the z-projection) come back as exact equidistant steps, in the direction they were taken.
    @Test func equidistantStepsAreFittedThroughAPullThatGoesOnceAround() {
        for (start, direction) in [(0.7, 1.0), (-2.1, -1.0), (3.0, 1.0)] {
            let truth = (0..<5).map { start + direction * 2 * Double.pi * Double($0) / 5 }
            let pulled = truth.map { $0 + 0.35 * sin($0 + 0.4) }
            let fitted = SIM3DReconstructor.equidistantPhases(fitting: pulled)
            for (f, t) in zip(fitted, truth) {
                let error = atan2(sin(f - t), cos(f - t))
                #expect(abs(error) < 0.02, "start \(start), direction \(direction): fitted \(fitted), truth \(truth)")
            }
        }
    }

    /// A stack whose first and last planes hold only smooth light (a specimen inside it) reads
    /// as blunt at its edges; one whose edge planes hold fine structure (the stack cuts through
    /// the specimen) as sharp; noise alone does not make edges sharp.
    @Test func edgePlanesThatCutThroughTheSpecimenReadAsSharp() throws {
        let n = 32
        let nz = 8
        let rec = try SIM3DReconstructor(
            n: n, nz: nz, pixelUm: 0.08, dzUm: 0.125,
            optics: Widefield3D(na: 1.4, immersionIndex: 1.518, emissionNm: 525))
        var random = SystemRandomNumberGenerator()
        /// 3 × 5 stacks: a smooth gradient everywhere, fine dots of `detail(z)` in each plane, noise.
        func stacks(detail: (Int) -> Float) -> [[[Float]]] {
            (0..<3).map { _ in
                (0..<5).map { _ in
                    (0..<(n * n * nz)).map { i in
                        let x = i % n
                        let y = (i / n) % n
                        let z = i / (n * n)
                        let dots: Float = (x % 4 == 0 && y % 4 == 0) ? detail(z) : 0
                        return 100 + Float(x + y) + dots + Float.random(in: -2...2, using: &random)
                    }
                }
            }
        }
        let inside = rec.edgePlaneSharpness(stacks { z in (2...5).contains(z) ? 50 : 0 })
        let cut = rec.edgePlaneSharpness(stacks { _ in 50 })
        let noiseOnly = rec.edgePlaneSharpness(stacks { _ in 0 })
        #expect(inside < SIM3DReconstructor.cutSpecimenSharpness, "specimen inside: \(inside)")
        #expect(cut > 0.5, "specimen cut: \(cut)")
        #expect(noiseOnly.isFinite, "noise only: \(noiseOnly)")
    }

    /// The reconstruction runs on a mirrored, faded lateral border: a uniform fluorescent layer
    /// under the three-beam pattern comes back uniform up to the field's edges. Without the border
    /// (the field's own edges faded) the edges lose their brightness, which is what the border is for.
    @Test func theWholeFieldIsKeptNoDarkBorder() throws {
        let n = 64
        let nz = 16
        let pixelUm = 0.065
        let optics = Widefield3D(na: 1.4, immersionIndex: 1.518, emissionNm: 525)
        let k = 2.3
        let params = (0..<3).map { a -> SIM3DAngle in
            let theta = (12 + 60 * Double(a)) * Double.pi / 180
            return SIM3DAngle(
                kx: k * cos(theta), ky: k * sin(theta), kz: 0.95,
                phases: (0..<5).map { 0.4 + 2 * Double.pi * Double($0) / 5 }, m1: 0.5, m2: 0.3)
        }
        // A uniform layer: every plane sees the pattern's lateral part (orders 1 and 2 through
        // transfers of 0.5 and 0.3, arbitrary here), 1000 photons over an offset of 100.
        let stacks = params.map { angle in
            angle.phases.map { phase in
                (0..<(n * n * nz)).map { i -> Float in
                    let x = Double(i % n) * pixelUm
                    let y = Double((i / n) % n) * pixelUm
                    let carrier = 2 * Double.pi * (angle.kx * x + angle.ky * y) + phase
                    return Float(100 + 1000 * (1 + 0.5 * angle.m1 * cos(carrier) + 0.3 * angle.m2 * cos(2 * carrier)))
                }
            }
        }
        /// Mean over the band of `width` pixels along the edges of every `side`² plane, over the mean of the rest.
        func borderOverInterior(_ volume: [Float], side: Int, width: Int) -> Double {
            var border = 0.0
            var interior = 0.0
            var borderCount = 0.0
            var interiorCount = 0.0
            for (i, value) in volume.enumerated() {
                let x = i % side
                let y = (i / side) % side
                if min(x, y, side - 1 - x, side - 1 - y) < width {
                    border += Double(value)
                    borderCount += 1
                } else {
                    interior += Double(value)
                    interiorCount += 1
                }
            }
            return (border / borderCount) / (interior / interiorCount)
        }
        func ratio(edgePadding: Int?) throws -> Double {
            let rec = try SIM3DReconstructor(
                n: n, nz: nz, pixelUm: pixelUm, dzUm: 0.125, optics: optics, edgePadding: edgePadding)
            rec.background = 100
            rec.wiener = .fixed(0.05)
            return borderOverInterior(try rec.reconstruct(stacks, parameters: params), side: 2 * n, width: 8)
        }
        let padded = try ratio(edgePadding: nil)
        #expect(abs(padded - 1) < 0.05, "border/interior with the mirrored border: \(padded)")
        let faded = try ratio(edgePadding: 0)
        #expect(faded < 0.8, "border/interior with the field's edges faded: \(faded)")
    }
}
