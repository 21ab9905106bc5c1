import Foundation
import MoireFFT
@testable import MoireReconstruction
import MoireTesting
import Testing

/// The 2D-SIM reconstruction's inner kernels against plain per-sample references.
@Suite struct SIM2DKernelTests {

    /// With one orientation (LLS-SIM) the apodization follows the extended support's reach in each
    /// direction: it still passes frequencies just short of f_c + |k| along k, and nothing beyond
    /// f_c across k; with three orientations it is the disc of radius f_c + |k|.
    @Test func oneOrientationIsApodizedToItsOwnSupport() throws {
        let pixelUm = 0.08
        let otf = IdealOTF(na: 1.0, emissionNm: 560)
        let fc = otf.cutoff
        let k = 0.8 * fc
        func apodization(angles: Int, at fx: Double, _ fy: Double) throws -> Float {
            let rec = try SIM2DReconstructor(
                width: 64, height: 64, pixelUm: pixelUm, angles: angles, phases: 3, otf: otf, options: SIM2DOptions())
            let priors = PatternPrior.regular(periodUm: 1 / k, firstAngleDeg: 0, angles: angles, phases: 3)
            let plan = try rec.prepareWeights(SIMParameters.fromPriors(priors))
            // The 2× grid's half spectrum: W = 2·grid width columns (u ≥ 0), H rows.
            let width = 2 * rec.grid.width
            let height = 2 * rec.grid.height
            let halfWidth = width / 2 + 1
            let u = Int((fx * Double(width) * pixelUm / 2).rounded())
            let v = (Int((fy * Double(height) * pixelUm / 2).rounded()) + height) % height
            return plan.apodization[v * halfWidth + u]
        }
        #expect(try apodization(angles: 1, at: 0.95 * (fc + k), 0) > 0, "along k, short of f_c + |k|")
        #expect(try apodization(angles: 1, at: 0, 1.05 * fc) == 0, "across k, beyond f_c")
        #expect(try apodization(angles: 3, at: 0, 1.05 * fc) > 0, "three orientations: the whole disc")
    }
    /// A shifted, mirrored placement like a band's: consecutive sources land on consecutive
    /// destinations (ascending or descending), with gaps (−1) where the Hermitian mirror carries
    /// the sample, and runs that end where the destination reaches 0.
    func placement(count: Int, destinations: Int, step: Int, seed: UInt64) -> [Int32] {
        var rng = SplitMix64(seed: seed)
        var index = [Int32](repeating: -1, count: count)
        var i = 0
        while i < count {
            let gap = Int(rng.next() % 5)
            i += gap
            let length = 1 + Int(rng.next() % 40)
            let start = step > 0 ? Int(rng.next() % UInt64(destinations - length)) : length - 1 + Int(rng.next() % UInt64(destinations - length))
            for t in 0..<length where i + t < count { index[i + t] = Int32(start + step * t) }
            i += length
        }
        // A descending run that reaches destination 0, followed by a gap.
        if step < 0, count > 8 { for t in 0..<4 { index[t] = Int32(3 - t) }; index[4] = -1 }
        return index
    }

    @Test(arguments: [1, -1])
    func runsAddExactlyWhatTheIndexSays(step: Int) {
        let count = 5000
        let destinations = 400
        for seed in UInt64(1)...UInt64(5) {
            let index = placement(count: count, destinations: destinations, step: step, seed: seed)
            var rng = SplitMix64(seed: seed &* 77)
            let weight = (0..<count).map { _ in Float(rng.nextUnit()) }
            let source = (0..<count).map { _ in Complex32(Float(rng.nextUnit() - 0.5), Float(rng.nextUnit() - 0.5)) }
            let conjugate = step < 0
            // Reference: one sample at a time, in source order.
            var expected = [Complex32](repeating: Complex32(1, -1), count: destinations)
            for i in 0..<count where index[i] >= 0 {
                let j = Int(index[i])
                expected[j].re += weight[i] * source[i].re
                expected[j].im += (conjugate ? -1 : 1) * weight[i] * source[i].im
            }
            // Placements of a real band never send two samples to one destination; the random
            // index may, so the comparison is made where each destination is hit once.
            var hits = [Int](repeating: 0, count: destinations)
            for j in index where j >= 0 { hits[Int(j)] += 1 }
            let placement = BandPlacement(index: index, weight: weight, step: step)
            #expect(placement.runs.allSatisfy { $0.length >= 1 })
            #expect(placement.runs.map { $0.length }.reduce(0, +) == index.filter { $0 >= 0 }.count)
            var got = [Complex32](repeating: Complex32(1, -1), count: destinations)
            source.withUnsafeBufferPointer { s in
                got.withUnsafeMutableBufferPointer { g in
                    placement.accumulate(s.baseAddress!, into: g.baseAddress!, conjugate: conjugate)
                }
            }
            for j in 0..<destinations where hits[j] <= 1 {
                #expect(abs(got[j].re - expected[j].re) < 1e-5 && abs(got[j].im - expected[j].im) < 1e-5, "destination \(j)")
            }
        }
    }

    @Test func rangeFindsTheExtremesAndAnyNonFiniteValue() {
        var rng = SplitMix64(seed: 9)
        for count in [1, 7, 8, 9, 63, 64, 1001] {
            let values = (0..<count).map { _ in Float(rng.nextUnit() * 2000 - 1000) }
            let (lo, hi, finite) = values.withUnsafeBufferPointer(SIM2DReconstructor.range)
            #expect(lo == values.min()! && hi == values.max()! && finite, "\(count) values")
            for bad in [Float.nan, .infinity, -.infinity] {
                for position in Set([0, count / 2, count - 1]) {
                    var poisoned = values
                    poisoned[position] = bad
                    let (_, _, ok) = poisoned.withUnsafeBufferPointer(SIM2DReconstructor.range)
                    #expect(!ok, "\(bad) at \(position) of \(count)")
                }
            }
        }
    }
}
