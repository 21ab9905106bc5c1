import Foundation
import MoireCore
import MoireFFT

/// Options of a 2D-SIM reconstruction.
public struct SIM2DOptions: Codable, Sendable, Equatable {
    /// Regularisation of the Wiener filter: adaptive (from each set's own signal and noise) or a constant w.
    public var wiener: WienerParameter = .adaptive
    /// The apodization is the ideal incoherent OTF whose cutoff is this fraction of the extended
    /// support (f_c + |k|): the transfer function of the SR image.
    public var apodization: Double = 1.0
    /// Strength (0…1) of the suppression of bands ±1 near their order centres, where band 0 leaks
    /// (out-of-focus background, imperfect separation) and would leave peaks at ±k.
    public var suppression: OrderSuppression = .adaptive
    /// Width (FWHM, cycles/µm) of that suppression.
    public var suppressionFWHM: Double = 1.2
    /// How the filter weighs each orientation's bands ±1: by one modulation common to every
    /// orientation (the mean of the trusted estimates), or by each orientation's own estimate.
    public var modulationInFilter: ModulationInFilter = .common
    /// Constant camera background subtracted from every raw frame (ADU).
    public var background: Double = 0
    /// Pixels at the image edges faded to zero before the transforms of parameter estimation.
    public var edgeTaper: Int = 16
    /// Pixels of mirrored border added on every side before the reconstruction's transforms,
    /// faded to zero across the border: the whole field is kept, with no wrap-around at its edges
    /// (rounded up to an even number).
    public var edgePadding: Int = 16
    /// A k estimate deviating more than this fraction from its prior is not trusted.
    public var maxKDeviation: Double = 0.03
    /// Orientations deviating more than this from the prior (degrees) are not trusted.
    public var maxAngleDeviationDeg: Double = 2
    /// Correlation peak over background needed to trust an estimate.
    public var minConfidence: Double = 6
    /// Search radius around the prior, in spectral pixels.
    public var searchRadiusPx: Double = 4
    /// Low-frequency notch of band 0 during estimation (σ as a fraction of the OTF cutoff).
    public var estimationNotch: Double = 0.15
    /// Exponent of the OTF used as the estimation filter (1: matched filter; 0: flat within the support).
    public var estimationFilterPower: Double = 1

    public init() {}
}

/// 2D-SIM (TIRF-SIM, GI-SIM): band separation with per-frame phases, parameter estimation seeded
/// by the nominal pattern, and generalized Wiener reconstruction on the 2× grid.
///
/// Frames come orientation-major: `frames[angle · phases + phase]`, each `width × height` floats.
/// Not thread-safe: one reconstructor per thread (its buffers are reused).
// Sendable by hand: buffers reused per call: one reconstructor per thread (see the doc).
public final class SIM2DReconstructor: @unchecked Sendable {
    public let width: Int
    public let height: Int
    public let pixelUm: Double
    public let angles: Int
    public let phases: Int
    public let otf: RadialOTF
    public var options: SIM2DOptions
    let n: Int
    let fwd: FFTPlan2D, inv: FFTPlan2D
    let taper: [Float]
    // Work buffers of estimation (the camera's grid).
    let bufA: AlignedBuffer<Complex32>, bufB: AlignedBuffer<Complex32>
    /// The reconstruction's grid: the frame with `padding` mirrored pixels on every side.
    let grid: PaddedGrid
    let gridForward: FFTPlan2D, gridR2C: FFTPlan2D, c2rBig: FFTPlan2D
    // Work buffers of reconstruction (the padded grid and its 2× grid).
    let gridA: AlignedBuffer<Complex32>, gridB: AlignedBuffer<Complex32>
    let band0: AlignedBuffer<Float>, smallHalf: AlignedBuffer<Complex32>
    /// The bands separated on the camera's grid, before padding: band 0 (every orientation's
    /// together) and one orientation's band +1 as real and imaginary planes.
    let separatedBand0: AlignedBuffer<Float>, separatedRe: AlignedBuffer<Float>, separatedIm: AlignedBuffer<Float>
    let bigHalf: AlignedBuffer<Complex32>, bigReal: AlignedBuffer<Float>
    var weightsCache: (params: SIMParameters, opts: SIM2DOptions, plan: WienerPlan)?
    /// The filter on the 2× grid's half spectrum, and |band 0|² of the set (the adaptive filter's input).
    var wienerFilter: WienerFilter
    let bandPower: AlignedBuffer<Float>
    /// The signal and noise measured on the last set reconstructed with the adaptive filter (nil:
    /// a constant w, or the fallback when the set offered no noise reference or no signal).
    public internal(set) var lastSpectralModel: SpectralModel?

    /// Adds the patient plans of the padded grid's forward complex transform (three per SR frame)
    /// to the wisdom, for frames of `width × height`: about 90 s on 2 cores for 512², and each of
    /// those transforms then takes 0.54 ms instead of 0.75–0.95 ms with a measured plan (FFTW
    /// benchmark on the same grid). The other transforms gain nothing from the wider search.
    public static func makePatientWisdom(width: Int, height: Int, options: SIM2DOptions = SIM2DOptions()) throws {
        let grid = PaddedGrid(width: width, height: height, padding: options.edgePadding)
        _ = try FFT.plan2D(width: grid.width, height: grid.height, kind: .c2cForward, rigor: .patient)
    }

    public init(
        width: Int, height: Int, pixelUm: Double, angles: Int, phases: Int, otf: RadialOTF,
        options: SIM2DOptions = SIM2DOptions(), rigor: PlanRigor = .estimate
    ) throws {
        guard width >= 16, height >= 16, width % 2 == 0, height % 2 == 0 else {
            throw MoireError(.usage, "SIM frames must be at least 16×16 with even sides; got \(width)×\(height)")
        }
        guard angles >= 1, phases >= 3 else {
            throw MoireError(.usage, "2D-SIM needs at least 1 angle and 3 phases; got \(angles)×\(phases)")
        }
        guard pixelUm > 0 else { throw MoireError(.usage, "pixel size must be positive") }
        self.width = width; self.height = height; self.pixelUm = pixelUm
        self.angles = angles; self.phases = phases; self.otf = otf; self.options = options
        n = width * height
        fwd = try FFT.plan2D(width: width, height: height, kind: .c2cForward, rigor: rigor)
        inv = try FFT.plan2D(width: width, height: height, kind: .c2cBackward, rigor: rigor)
        bufA = AlignedBuffer(count: n)
        bufB = AlignedBuffer(count: n)
        taper = Self.makeTaper(width: width, height: height, edge: options.edgeTaper)
        let g = PaddedGrid(width: width, height: height, padding: options.edgePadding)
        grid = g
        gridForward = try FFT.plan2D(width: g.width, height: g.height, kind: .c2cForward, rigor: rigor)
        gridR2C = try FFT.plan2D(width: g.width, height: g.height, kind: .r2c, rigor: rigor)
        c2rBig = try FFT.plan2D(width: 2 * g.width, height: 2 * g.height, kind: .c2r, rigor: rigor)
        gridA = AlignedBuffer(count: g.count)
        gridB = AlignedBuffer(count: g.count)
        band0 = AlignedBuffer(count: g.count)
        separatedBand0 = AlignedBuffer(count: n)
        separatedRe = AlignedBuffer(count: n)
        separatedIm = AlignedBuffer(count: n)
        smallHalf = AlignedBuffer(count: g.height * (g.width / 2 + 1))
        bigHalf = AlignedBuffer(count: 2 * g.height * (g.width + 1))
        bigReal = AlignedBuffer(count: 4 * g.count)
        wienerFilter = WienerFilter(values: AlignedBuffer(count: 2 * g.height * (g.width + 1)))
        bandPower = AlignedBuffer(count: g.height * (g.width / 2 + 1))
    }

    static func makeTaper(width: Int, height: Int, edge: Int) -> [Float] {
        func ramp(_ i: Int, _ len: Int) -> Float {
            guard edge > 0 else { return 1 }
            let d = min(i, len - 1 - i)
            if d >= edge { return 1 }
            return Float(0.5 - 0.5 * cos(Double.pi * (Double(d) + 0.5) / Double(edge)))
        }
        var t = [Float](repeating: 1, count: width * height)
        for y in 0..<height { let ry = ramp(y, height); for x in 0..<width { t[y * width + x] = ry * ramp(x, width) } }
        return t
    }

    /// Spatial frequency (cycles/µm) of FFT index (u, v).
    @inline(__always) func freq(_ u: Int, _ v: Int, w: Int, h: Int, scale: Double) -> (Double, Double) {
        let fu = u < w / 2 ? u : u - w
        let fv = v < h / 2 ? v : v - h
        return (Double(fu) / (Double(w) * scale), Double(fv) / (Double(h) * scale))
    }

    // MARK: input checks

    /// Checks the frame count and sizes and rejects blank or non-finite frames.
    func check(_ frames: [[Float]]) throws {
        try checkShapes(frames)
        nonisolated(unsafe) var ranges = [(Float, Float, Bool)](repeating: (0, 0, true), count: frames.count)
        ranges.withUnsafeMutableBufferPointer { found in
            nonisolated(unsafe) let results = found
            DispatchQueue.concurrentPerform(iterations: frames.count) { i in
                results[i] = frames[i].withUnsafeBufferPointer(Self.range)
            }
        }
        try checkValues(ranges)
    }

    /// Refuses a frame with NaN or infinite values, or a blank one, from each frame's (smallest,
    /// largest, all finite).
    func checkValues(_ ranges: [(Float, Float, Bool)]) throws {
        for (i, (lo, hi, finite)) in ranges.enumerated() {
            guard finite else { throw MoireError(.numeric, "frame \(i) contains NaN or infinite values") }
            guard hi - lo > 0 else { throw MoireError(.numeric, "frame \(i) is blank (every pixel is \(lo))") }
        }
    }

    /// Refuses a phase set of the wrong number of frames or of frames of the wrong size.
    func checkShapes(_ frames: [[Float]]) throws {
        guard frames.count == angles * phases else {
            throw MoireError(
                .usage,
                "2D-SIM with \(angles) angles × \(phases) phases needs \(angles * phases) frames; got \(frames.count)")
        }
        for (i, f) in frames.enumerated() where f.count != n {
            throw MoireError(.usage, "frame \(i) has \(f.count) pixels; expected \(width)×\(height)")
        }
    }

    /// The smallest and largest value, and whether every value is finite (v − v is 0 only for a
    /// finite v), in 8-wide passes.
    static func range(_ values: UnsafeBufferPointer<Float>) -> (Float, Float, Bool) {
        var found = ValueRange()
        guard let base = values.baseAddress else { return found.found }
        let whole = values.count / 8 * 8
        for i in stride(from: 0, to: whole, by: 8) {
            found.add(UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<Float>.self))
        }
        for i in whole..<values.count { found.add(values[i]) }
        return found.found
    }

    // MARK: band separation

    /// Least-squares separation of one orientation's frames with phases `phi` into band 0 (real) and band +1.
    func separate(_ frames: ArraySlice<[Float]>, phases phi: [Double]) -> (b0: [Float], c1: [Complex32]) {
        // D_p = B0 + e^{iφp}·C + e^{−iφp}·conj(C): unknowns B0 (real), Re C, Im C, by least squares.
        let w = separationWeights(phi)
        var b0 = [Float](repeating: 0, count: n)
        var c1 = [Complex32](repeating: .zero, count: n)
        let bg = Float(options.background)
        for (p, f) in frames.enumerated() {
            let w0 = w[0][p]
            let wr = w[1][p]
            let wi = w[2][p]
            f.withUnsafeBufferPointer { fp in
                taper.withUnsafeBufferPointer { tp in
                    for i in 0..<n {
                        let v = (fp[i] - bg) * tp[i]
                        b0[i] += w0 * v
                        c1[i].re += wr * v
                        c1[i].im += wi * v
                    }
                }
            }
        }
        return (b0, c1)
    }

    func invert3(_ a: [[Double]]) -> [[Double]] {
        let det =
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        let d = abs(det) < 1e-12 ? 1e-12 : det
        var r = [[Double]](repeating: [0, 0, 0], count: 3)
        r[0][0] = (a[1][1] * a[2][2] - a[1][2] * a[2][1]) / d
        r[0][1] = (a[0][2] * a[2][1] - a[0][1] * a[2][2]) / d
        r[0][2] = (a[0][1] * a[1][2] - a[0][2] * a[1][1]) / d
        r[1][0] = (a[1][2] * a[2][0] - a[1][0] * a[2][2]) / d
        r[1][1] = (a[0][0] * a[2][2] - a[0][2] * a[2][0]) / d
        r[1][2] = (a[0][2] * a[1][0] - a[0][0] * a[1][2]) / d
        r[2][0] = (a[1][0] * a[2][1] - a[1][1] * a[2][0]) / d
        r[2][1] = (a[0][1] * a[2][0] - a[0][0] * a[2][1]) / d
        r[2][2] = (a[0][0] * a[1][1] - a[0][1] * a[1][0]) / d
        return r
    }

    // MARK: widefield

    /// Mean of all frames, background subtracted (the widefield reference), `width × height`.
    public func widefield(_ frames: [[Float]]) throws -> [Float] {
        var out = [Float](repeating: 0, count: n)
        try out.withUnsafeMutableBufferPointer { try widefield(frames, into: $0) }
        return out
    }

    /// The widefield mean into `out` (`width × height` floats), without allocating.
    public func widefield(_ frames: [[Float]], into out: UnsafeMutableBufferPointer<Float>) throws {
        guard out.count >= n else { throw MoireError(.usage, "output buffer holds \(out.count) floats; \(n) needed") }
        try check(frames)
        for i in 0..<n { out[i] = 0 }
        for f in frames { f.withUnsafeBufferPointer { fp in for i in 0..<n { out[i] += fp[i] } } }
        let s = 1 / Float(frames.count)
        let bg = Float(options.background)
        for i in 0..<n { out[i] = out[i] * s - bg }
    }
}

/// The reconstruction's grid: a frame with a mirrored border on every side, faded to zero across
/// the border, so that the periodic transforms see no edge. Each border is at least the padding
/// asked for, widened until the side has no prime factor above 5 (fast transforms).
struct PaddedGrid: Sendable {
    let width: Int
    let height: Int
    /// Border columns on the left and on the right, rows at the top and at the bottom.
    let paddingX: Int
    let paddingY: Int
    /// For every grid pixel, the frame pixel it mirrors (row-major, frame `fieldWidth` wide).
    let source: [Int32]
    /// For every grid pixel, its weight: 1 over the frame, a cosine fade to 0 across the border.
    let window: [Float]

    var count: Int { width * height }

    init(width fieldWidth: Int, height fieldHeight: Int, padding requested: Int) {
        paddingX = Self.padding(for: fieldWidth, atLeast: requested)
        paddingY = Self.padding(for: fieldHeight, atLeast: requested)
        width = fieldWidth + 2 * paddingX
        height = fieldHeight + 2 * paddingY
        var source = [Int32](repeating: 0, count: width * height)
        var window = [Float](repeating: 0, count: width * height)
        for y in 0..<height {
            let sy = Self.mirror(y - paddingY, fieldHeight)
            let wy = Self.fade(y, field: fieldHeight, padding: paddingY)
            for x in 0..<width {
                source[y * width + x] = Int32(sy * fieldWidth + Self.mirror(x - paddingX, fieldWidth))
                window[y * width + x] = wy * Self.fade(x, field: fieldWidth, padding: paddingX)
            }
        }
        self.source = source
        self.window = window
    }

    /// The smallest even border ≥ `requested` (0 stays 0) that leaves `side + 2·border` 5-smooth.
    /// Not 7: FFTW's radix-7 passes are slow enough that a larger 5-smooth grid is faster (a
    /// 512² frame: three 576² transforms and one 1152² in 5.3 ms against 560² and 1120² in 7.0 ms).
    static func padding(for side: Int, atLeast requested: Int) -> Int {
        guard requested > 0 else { return 0 }
        var border = (requested + 1) / 2 * 2
        while !isSmooth(side + 2 * border) { border += 2 }
        return border
    }

    static func isSmooth(_ value: Int) -> Bool {
        var rest = value
        for prime in [2, 3, 5] { while rest % prime == 0 { rest /= prime } }
        return rest == 1
    }

    /// Symmetric mirror of frame coordinate `j` (any integer) into 0..<len, the edge pixel repeated once.
    static func mirror(_ j: Int, _ len: Int) -> Int {
        let period = 2 * len
        let folded = ((j % period) + period) % period
        return folded < len ? folded : period - 1 - folded
    }

    /// 1 inside the frame; across the border a cosine from 1 (next to the frame) to 0 (at the grid's edge).
    static func fade(_ i: Int, field: Int, padding: Int) -> Float {
        let outside = i < padding ? padding - i : (i >= padding + field ? i - (padding + field) + 1 : 0)
        guard outside > 0 else { return 1 }
        return Float(0.5 + 0.5 * cos(Double.pi * (Double(outside) - 0.5) / Double(padding)))
    }
}
