import CFFTW
import Foundation
import MoireCore

/// A 64-byte aligned buffer of `count` elements from fftwf_malloc, freed on deinit.
// Sendable by hand: a raw buffer: its owner partitions access, one writer per element range at a time.
public final class AlignedBuffer<Element>: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Element>

    public init(count: Int) {
        self.count = count
        let raw = fftwf_malloc(max(1, count) * MemoryLayout<Element>.stride)!
        pointer = raw.bindMemory(to: Element.self, capacity: max(1, count))
        memset(raw, 0, max(1, count) * MemoryLayout<Element>.stride)
    }

    deinit { fftwf_free(pointer) }

    public subscript(i: Int) -> Element {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public var buffer: UnsafeMutableBufferPointer<Element> { UnsafeMutableBufferPointer(start: pointer, count: count) }
}

/// A complex single-precision number laid out as FFTW's `fftwf_complex`.
public struct Complex32: Sendable, Equatable {
    public var re: Float
    public var im: Float
    public init(_ re: Float, _ im: Float) { self.re = re; self.im = im }
    public static let zero = Complex32(0, 0)

    /// The complex product.
    @inline(__always) public static func * (a: Complex32, b: Complex32) -> Complex32 {
        Complex32(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re)
    }
}

/// How hard FFTW searches for a fast plan.
public enum PlanRigor: Hashable, Sendable {
    /// A heuristic plan, made at once.
    case estimate
    /// The fastest plan FFTW finds by timing candidates (seconds to minutes for large 3D shapes
    /// the first time; instant when the wisdom holds it).
    case measure
    /// The measured plan when the loaded wisdom holds one for this shape, else an estimated plan:
    /// never slow to make (live runs; `moire wisdom` makes the wisdom once per machine).
    case fromWisdom
    /// FFTW's wider search (FFTW_PATIENT): a minute or more for one 2D shape, for wisdom made once
    /// per machine (`moire wisdom`); a measured plan of the same shape then takes it from the wisdom.
    case patient

    var flag: UInt32 {
        switch self {
        case .estimate: return UInt32(FFTW_ESTIMATE)
        case .measure: return UInt32(FFTW_MEASURE)
        case .patient: return UInt32(FFTW_PATIENT)
        case .fromWisdom: return UInt32(FFTW_MEASURE) | UInt32(FFTW_WISDOM_ONLY)
        }
    }

    /// Plans with `make(flags)`; a wisdom-only plan that the wisdom cannot give is estimated instead.
    func plan(_ make: (UInt32) -> fftwf_plan?) -> fftwf_plan? {
        if let made = make(flag) { return made }
        return self == .fromWisdom ? make(UInt32(FFTW_ESTIMATE)) : nil
    }
}

/// Kinds of transform a plan performs.
public enum FFTKind: Hashable, Sendable {
    case r2c, c2r, c2cForward, c2cBackward
}

/// A 2D FFTW plan, made once and executed on any arrays of the same shape and alignment.
///
/// Unnormalised, as FFTW: a forward then backward transform multiplies by `width·height`.
// Sendable by hand: immutable plan, executable from any thread; made and destroyed under FFT.planning.
public final class FFTPlan2D: @unchecked Sendable {
    public let width: Int
    public let height: Int
    public let kind: FFTKind
    private let plan: fftwf_plan

    /// Number of complex values in a half spectrum (r2c output).
    public var halfSpectrumCount: Int { height * (width / 2 + 1) }

    fileprivate init(width: Int, height: Int, kind: FFTKind, rigor: PlanRigor) throws {
        self.width = width; self.height = height; self.kind = kind
        let n = width * height
        var made: fftwf_plan?
        switch kind {
        case .r2c:
            let i = AlignedBuffer<Float>(count: n)
            let o = AlignedBuffer<Complex32>(count: height * (width / 2 + 1))
            made = o.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: o.count) { op in
                rigor.plan { fftwf_plan_dft_r2c_2d(Int32(height), Int32(width), i.pointer, op, $0) }
            }
        case .c2r:
            let i = AlignedBuffer<Complex32>(count: height * (width / 2 + 1))
            let o = AlignedBuffer<Float>(count: n)
            made = i.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: i.count) { ip in
                rigor.plan { fftwf_plan_dft_c2r_2d(Int32(height), Int32(width), ip, o.pointer, $0) }
            }
        case .c2cForward, .c2cBackward:
            let i = AlignedBuffer<Complex32>(count: n)
            let o = AlignedBuffer<Complex32>(count: n)
            let sign = kind == .c2cForward ? FFTW_FORWARD : FFTW_BACKWARD
            made = i.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: n) { ip in
                o.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: n) { op in
                    rigor.plan { fftwf_plan_dft_2d(Int32(height), Int32(width), ip, op, sign, $0) }
                }
            }
        }
        guard let made else { throw MoireError(.numeric, "FFTW could not plan a \(width)×\(height) \(kind) transform") }
        plan = made
    }

    deinit { FFT.planning.withLock { fftwf_destroy_plan(plan) } }

    /// Real → half-complex spectrum.
    public func forward(_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Complex32>) {
        precondition(kind == .r2c)
        output.withMemoryRebound(to: fftwf_complex.self, capacity: halfSpectrumCount) {
            fftwf_execute_dft_r2c(plan, input, $0)
        }
    }

    /// Half-complex spectrum → real (destroys the input, as FFTW's c2r does).
    public func inverse(_ input: UnsafeMutablePointer<Complex32>, _ output: UnsafeMutablePointer<Float>) {
        precondition(kind == .c2r)
        input.withMemoryRebound(to: fftwf_complex.self, capacity: halfSpectrumCount) {
            fftwf_execute_dft_c2r(plan, $0, output)
        }
    }

    /// Complex → complex in the plan's direction.
    public func execute(_ input: UnsafeMutablePointer<Complex32>, _ output: UnsafeMutablePointer<Complex32>) {
        precondition(kind == .c2cForward || kind == .c2cBackward)
        let n = width * height
        input.withMemoryRebound(to: fftwf_complex.self, capacity: n) { ip in
            output.withMemoryRebound(to: fftwf_complex.self, capacity: n) { op in
                fftwf_execute_dft(plan, ip, op)
            }
        }
    }
}

/// A 3D complex FFTW plan (z slowest), made once and executed on any arrays of the same shape.
// Sendable by hand: immutable plan, executable from any thread; made and destroyed under FFT.planning.
public final class FFTPlan3D: @unchecked Sendable {
    public let width: Int, height: Int, depth: Int
    public let forward: Bool
    private let plan: fftwf_plan

    fileprivate init(width: Int, height: Int, depth: Int, forward: Bool, rigor: PlanRigor) throws {
        self.width = width; self.height = height; self.depth = depth; self.forward = forward
        let n = width * height * depth
        let i = AlignedBuffer<Complex32>(count: n)
        let o = AlignedBuffer<Complex32>(count: n)
        let made = i.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: n) { ip in
            o.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: n) { op in
                rigor.plan {
                    fftwf_plan_dft_3d(
                        Int32(depth), Int32(height), Int32(width), ip, op, forward ? FFTW_FORWARD : FFTW_BACKWARD, $0)
                }
            }
        }
        guard let made else {
            throw MoireError(.numeric, "FFTW could not plan a \(width)×\(height)×\(depth) transform")
        }
        plan = made
    }

    deinit { FFT.planning.withLock { fftwf_destroy_plan(plan) } }

    public func execute(_ input: UnsafeMutablePointer<Complex32>, _ output: UnsafeMutablePointer<Complex32>) {
        let n = width * height * depth
        input.withMemoryRebound(to: fftwf_complex.self, capacity: n) { ip in
            output.withMemoryRebound(to: fftwf_complex.self, capacity: n) { op in fftwf_execute_dft(plan, ip, op) }
        }
    }
}

/// A 3D real-to-complex (forward) or complex-to-real (backward) FFTW plan (z slowest): the complex
/// side holds `(width/2 + 1) × height × depth` values. Unnormalised, like FFTW.
// Sendable by hand: immutable plan, executable from any thread; made and destroyed under FFT.planning.
public final class FFTPlan3DReal: @unchecked Sendable {
    public let width: Int, height: Int, depth: Int
    public let forward: Bool
    private let plan: fftwf_plan
    public var complexCount: Int { (width / 2 + 1) * height * depth }

    fileprivate init(width: Int, height: Int, depth: Int, forward: Bool, rigor: PlanRigor) throws {
        self.width = width; self.height = height; self.depth = depth; self.forward = forward
        let r = AlignedBuffer<Float>(count: width * height * depth)
        let c = AlignedBuffer<Complex32>(count: (width / 2 + 1) * height * depth)
        let made = c.pointer.withMemoryRebound(to: fftwf_complex.self, capacity: c.count) { cp in
            rigor.plan { flags in
                forward
                    ? fftwf_plan_dft_r2c_3d(Int32(depth), Int32(height), Int32(width), r.pointer, cp, flags)
                    : fftwf_plan_dft_c2r_3d(Int32(depth), Int32(height), Int32(width), cp, r.pointer, flags)
            }
        }
        guard let made else {
            throw MoireError(.numeric, "FFTW could not plan a real \(width)×\(height)×\(depth) transform")
        }
        plan = made
    }

    deinit { FFT.planning.withLock { fftwf_destroy_plan(plan) } }

    /// Forward: real `input` → complex `output`.
    public func execute(real input: UnsafeMutablePointer<Float>, complex output: UnsafeMutablePointer<Complex32>) {
        precondition(forward)
        output.withMemoryRebound(to: fftwf_complex.self, capacity: complexCount) {
            fftwf_execute_dft_r2c(plan, input, $0)
        }
    }

    /// Backward: complex `input` (overwritten by FFTW) → real `output`.
    public func execute(complex input: UnsafeMutablePointer<Complex32>, real output: UnsafeMutablePointer<Float>) {
        precondition(!forward)
        input.withMemoryRebound(to: fftwf_complex.self, capacity: complexCount) {
            fftwf_execute_dft_c2r(plan, $0, output)
        }
    }
}

/// The plan cache: one plan per shape, kind and rigor; planning serialised (FFTW's planner is not thread-safe).
public enum FFT {
    fileprivate static let planning = NSLock()
    private struct Key: Hashable { let w: Int, h: Int, kind: FFTKind, rigor: PlanRigor, threads: Int }
    nonisolated(unsafe) private static var cache: [Key: FFTPlan2D] = [:]

    nonisolated(unsafe) private static var threads = 1

    /// Lets plans made from now on use `n` threads (FFTW's threads library); call once, early.
    public static func useThreads(_ n: Int) {
        planning.withLock {
            if threads == 1 && n > 1 { fftwf_init_threads() }
            threads = max(1, n)
            fftwf_plan_with_nthreads(Int32(threads))
        }
    }

    nonisolated(unsafe) private static var cache3D: [String: FFTPlan3D] = [:]

    /// A cached 3D complex plan; made on first use.
    public static func plan3D(width: Int, height: Int, depth: Int, forward: Bool, rigor: PlanRigor = .estimate) throws
        -> FFTPlan3D
    {
        try cached3D(&cache3D, width, height, depth, forward, rigor) {
            try FFTPlan3D(width: width, height: height, depth: depth, forward: forward, rigor: rigor)
        }
    }

    nonisolated(unsafe) private static var cache3DReal: [String: FFTPlan3DReal] = [:]

    /// A cached 3D real plan (r2c when `forward`, c2r otherwise); made on first use.
    public static func plan3DReal(width: Int, height: Int, depth: Int, forward: Bool, rigor: PlanRigor = .estimate)
        throws -> FFTPlan3DReal
    {
        try cached3D(&cache3DReal, width, height, depth, forward, rigor) {
            try FFTPlan3DReal(width: width, height: height, depth: depth, forward: forward, rigor: rigor)
        }
    }

    /// One 3D plan per shape, direction, rigor and thread count, made under the planning lock.
    private static func cached3D<P>(
        _ cache: inout [String: P], _ width: Int, _ height: Int, _ depth: Int, _ forward: Bool,
        _ rigor: PlanRigor, make: () throws -> P
    ) throws -> P {
        guard width > 0, height > 0, depth > 0 else {
            throw MoireError(.numeric, "FFT shape \(width)×\(height)×\(depth) is empty")
        }
        return try planning.withLock {
            let key = "\(width)x\(height)x\(depth)/\(forward)/\(rigor)/\(threads)"
            if let p = cache[key] { return p }
            let p = try make()
            cache[key] = p
            return p
        }
    }

    /// The smallest size ≥ `n` that is a multiple of 8 with no prime factor above 5. Odd sides and
    /// radix-7 passes are slow in FFTW's 3D real transforms: a 600×525×120 r2c and c2r pair took
    /// 518 ms, 600×576×120 (10 % more samples) 244–260 ms, on a 2-core machine.
    public static func goodSize(_ n: Int) -> Int {
        var m = max(8, (n + 7) / 8 * 8)
        while true {
            var k = m
            for p in [2, 3, 5] { while k % p == 0 { k /= p } }
            if k == 1 { return m }
            m += 8
        }
    }

    /// Loads FFTW wisdom from `path` (plans made with `.measure` are then fast to make); false when absent.
    @discardableResult
    public static func loadWisdom(from path: String = defaultWisdomPath) -> Bool {
        planning.withLock { fftwf_import_wisdom_from_filename(path) != 0 }
    }

    /// Saves the wisdom gathered so far to `path` (creating its folder).
    public static func saveWisdom(to path: String = defaultWisdomPath) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ok = planning.withLock { fftwf_export_wisdom_to_filename(path) != 0 }
        guard ok else { throw MoireError(.io, "cannot write FFTW wisdom", place: path) }
    }

    /// `$XDG_CACHE_HOME/moire/fftw-wisdom` (or `~/.cache/…`).
    public static var defaultWisdomPath: String {
        let base = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")
        return base + "/moire/fftw-wisdom"
    }

    /// A cached plan for the shape and kind; made on first use.
    public static func plan2D(width: Int, height: Int, kind: FFTKind, rigor: PlanRigor = .estimate) throws -> FFTPlan2D
    {
        guard width > 0, height > 0 else { throw MoireError(.numeric, "FFT shape \(width)×\(height) is empty") }
        return try planning.withLock {
            let key = Key(w: width, h: height, kind: kind, rigor: rigor, threads: threads)
            if let p = cache[key] { return p }
            let p = try FFTPlan2D(width: width, height: height, kind: kind, rigor: rigor)
            cache[key] = p
            return p
        }
    }
}
