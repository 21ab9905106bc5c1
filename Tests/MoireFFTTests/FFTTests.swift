import Foundation
import MoireFFT
import Testing

@Suite struct FFTTests {
    @Test func cosineTransformsToTwoPeaksOfKnownHeight() throws {
        let w = 32
        let h = 16
        let kx = 3
        let ky = 2
        let plan = try FFT.plan2D(width: w, height: h, kind: .r2c)
        let input = AlignedBuffer<Float>(count: w * h)
        for y in 0..<h {
            for x in 0..<w {
                input[y * w + x] = Float(cos(2 * .pi * (Double(kx * x) / Double(w) + Double(ky * y) / Double(h))))
            }
        }
        let out = AlignedBuffer<Complex32>(count: plan.halfSpectrumCount)
        plan.forward(input.pointer, out.pointer)
        let peak = out[ky * (w / 2 + 1) + kx]
        #expect(abs(peak.re - Float(w * h / 2)) < 1e-2 && abs(peak.im) < 1e-2)
        var others: Float = 0
        for i in 0..<plan.halfSpectrumCount where i != ky * (w / 2 + 1) + kx && i != (h - ky) * (w / 2 + 1) + kx {
            others = max(others, abs(out[i].re) + abs(out[i].im))
        }
        #expect(others < 1e-2)
    }

    @Test func aWisdomOnlyPlanWithoutWisdomFallsBackToAnEstimatedPlanThatTransformsAlike() throws {
        // An odd shape no other test plans: the wisdom has nothing for it, so FFTW's wisdom-only
        // planner gives no plan and an estimated one is made instead.
        let w = 26
        let h = 14
        let d = 6
        let fromWisdom = try FFT.plan3DReal(width: w, height: h, depth: d, forward: true, rigor: .fromWisdom)
        let estimated = try FFT.plan3DReal(width: w, height: h, depth: d, forward: true, rigor: .estimate)
        let input = AlignedBuffer<Float>(count: w * h * d)
        for i in 0..<(w * h * d) { input[i] = Float((i * 37) % 11) - 5 }
        let a = AlignedBuffer<Complex32>(count: fromWisdom.complexCount)
        let b = AlignedBuffer<Complex32>(count: estimated.complexCount)
        fromWisdom.execute(real: input.pointer, complex: a.pointer)
        estimated.execute(real: input.pointer, complex: b.pointer)
        for i in 0..<fromWisdom.complexCount {
            #expect(abs(a[i].re - b[i].re) < 1e-3 && abs(a[i].im - b[i].im) < 1e-3)
        }
        // The sum of the input is the transform at the origin: the plan transforms, not just exists.
        let sum = (0..<(w * h * d)).reduce(Float(0)) { $0 + input[$1] }
        #expect(abs(a[0].re - sum) < 1e-2)
    }

    @Test func forwardThenInverseMultipliesBySize() throws {
        let w = 24
        let h = 20
        let f = try FFT.plan2D(width: w, height: h, kind: .c2cForward)
        let b = try FFT.plan2D(width: w, height: h, kind: .c2cBackward)
        let a = AlignedBuffer<Complex32>(count: w * h)
        let s = AlignedBuffer<Complex32>(count: w * h)
        let r = AlignedBuffer<Complex32>(count: w * h)
        for i in 0..<(w * h) { a[i] = Complex32(Float(i % 7) - 3, Float(i % 5)) }
        f.execute(a.pointer, s.pointer)
        b.execute(s.pointer, r.pointer)
        for i in 0..<(w * h) {
            #expect(abs(r[i].re / Float(w * h) - a[i].re) < 1e-4 && abs(r[i].im / Float(w * h) - a[i].im) < 1e-4)
        }
    }

    /// Good sizes are the smallest multiples of 8 with no prime factor above 5, checked against a
    /// search written out here.
    @Test func goodSizesAreTheSmallestFiveSmoothMultiplesOfEight() {
        func fiveSmooth(_ value: Int) -> Bool {
            var rest = value
            for prime in [2, 3, 5] { while rest % prime == 0 { rest /= prime } }
            return rest == 1
        }
        for n in 1...700 {
            let size = FFT.goodSize(n)
            #expect(size >= n && size % 8 == 0 && fiveSmooth(size), "goodSize(\(n)) = \(size)")
            let smaller = stride(from: 8, to: size, by: 8).filter { $0 >= n && fiveSmooth($0) }
            #expect(smaller.isEmpty, "goodSize(\(n)) = \(size), but \(smaller) is good too")
        }
        #expect(FFT.goodSize(520) == 576)
        #expect(FFT.goodSize(113) == 120)
    }

    @Test func plansAreCachedPerShape() throws {
        let a = try FFT.plan2D(width: 8, height: 8, kind: .r2c)
        let b = try FFT.plan2D(width: 8, height: 8, kind: .r2c)
        #expect(a === b)
        #expect(throws: (any Error).self) { try FFT.plan2D(width: 0, height: 8, kind: .r2c) }
    }
}

@Suite struct FFT3DAndWisdomTests {
    @Test func threeDTransformOfAPlaneWaveIsOnePeak() throws {
        let w = 8
        let h = 6
        let d = 4
        let f = try FFT.plan3D(width: w, height: h, depth: d, forward: true)
        let a = AlignedBuffer<Complex32>(count: w * h * d)
        let o = AlignedBuffer<Complex32>(count: w * h * d)
        for z in 0..<d {
            for y in 0..<h {
                for x in 0..<w {
                    let ph =
                        2 * Double.pi
                        * (2 * Double(x) / Double(w) + 1 * Double(y) / Double(h) + 3 * Double(z) / Double(d))
                    a[(z * h + y) * w + x] = Complex32(Float(cos(ph)), Float(sin(ph)))
                }
            }
        }
        f.execute(a.pointer, o.pointer)
        let peak = (3 * h + 1) * w + 2
        #expect(abs(o[peak].re - Float(w * h * d)) < 1e-3)
        for i in 0..<(w * h * d) where i != peak { #expect(abs(o[i].re) + abs(o[i].im) < 1e-3) }
    }

    @Test func wisdomRoundTripsThroughAFile() throws {
        let path = NSTemporaryDirectory() + "moire-wisdom-\(UUID().uuidString)/w"
        _ = try FFT.plan2D(width: 24, height: 24, kind: .r2c, rigor: .measure)
        try FFT.saveWisdom(to: path)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(FFT.loadWisdom(from: path))
        #expect(!FFT.loadWisdom(from: path + ".absent"))
    }
}
