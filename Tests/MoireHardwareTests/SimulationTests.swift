import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
import MoireStorage
import MoireTesting
import Testing

func stats(_ v: [Double]) -> (mean: Double, variance: Double) {
    let m = v.reduce(0, +) / Double(v.count)
    return (m, v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count - 1))
}

@Suite struct NoiseTests {
    @Test(arguments: [0.5, 3.0, 9.5, 10.5, 40.0, 700.0])
    func poissonHasMeanAndVarianceLambda(lambda: Double) {
        var r = SimRandom(seed: 42)
        let s = stats((0..<40_000).map { _ in r.poisson(lambda) })
        #expect(abs(s.mean - lambda) < 4 * (lambda / 40_000).squareRoot() + 1e-3)
        #expect(abs(s.variance / lambda - 1) < 0.05)
    }

    @Test func normalIsStandard() {
        var r = SimRandom(seed: 7)
        let s = stats((0..<40_000).map { _ in r.normal() })
        #expect(abs(s.mean) < 0.03 && abs(s.variance - 1) < 0.03)
    }

    @Test func normalPairsAreStandardUncorrelatedAndGaussianInTheTails() {
        var r = SimRandom(seed: 11)
        var first: [Double] = [], second: [Double] = []
        for _ in 0..<40_000 {
            let (a, b) = r.normalPair()
            first.append(a)
            second.append(b)
        }
        let all = first + second
        let s = stats(all)
        #expect(abs(s.mean) < 0.02 && abs(s.variance - 1) < 0.03)
        let correlation = zip(first, second).map { $0 * $1 }.reduce(0, +) / Double(first.count)
        #expect(abs(correlation) < 0.02)
        // P(|x| > 2) = 4.55 % for a standard normal (a uniform or triangular stand-in gives 0 or far less).
        let tail = Double(all.filter { abs($0) > 2 }.count) / Double(all.count)
        #expect(abs(tail - 0.0455) < 0.005, "tail \(tail)")
    }

    @Test func idealOTFMatchesAnalyticValues() {
        #expect(OpticalModel.idealOTF(0, cutoff: 5) == 1)
        #expect(OpticalModel.idealOTF(5, cutoff: 5) == 0)
        // r = 1/2: (2/π)(acos(1/2) − (1/2)·√(3/4)) = 0.391002
        #expect(abs(OpticalModel.idealOTF(2.5, cutoff: 5) - 0.391002) < 1e-5)
    }
}

@Suite struct SimulatedCameraTests {
    let dir = Fixtures.tempDir("hw")

    func setup(_ roi: Int = 64) throws -> (AcquisitionProtocol, RigDevices, SimWorld) {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: roi))
        let (d, w) = try Fixtures.devices(for: p)
        try d.camera.configure(CameraSettings(width: roi, height: roi, exposureMs: 5, trigger: .software))
        return (p, d, w)
    }

    func grab(_ d: RigDevices, pool: FramePool) throws -> (CapturedFrame, [Double]) {
        try d.camera.trigger()
        let f = try #require(try d.camera.nextFrame(timeoutMs: 5000))
        let n = f.width * f.height
        let px: [Double] = f.slot!.withBytes { raw in let b = raw.bindMemory(to: UInt16.self); return (0..<n).map { Double(b[$0]) } }
        f.slot?.release()
        return (f, px)
    }

    @Test func noLaserGivesADarkFrameOfOffsetAndReadNoise() throws {
        let (p, d, _) = try setup()
        let pool = FramePool(slots: 4, bytes: 64 * 64 * 2)
        try d.camera.start(pool: pool)
        defer { d.camera.stop() }
        let (f, px) = try grab(d, pool: pool)
        let cam = p.rig.cameraProfile
        let s = stats(px)
        #expect(f.state.lasers.isEmpty)
        #expect(abs(s.mean - cam.offsetADU) < 0.2)
        let readADU = cam.readNoiseE * cam.gainADUPerE
        #expect(abs(s.variance.squareRoot() - readADU) / readADU < 0.15)
    }

    @Test func patternedFrameCarriesItsStateAndModulationAtTheProfilesWaveVector() throws {
        let (p, d, _) = try setup()
        let pool = FramePool(slots: 4, bytes: 64 * 64 * 2)
        let spec = try #require(p.rig.modulator?.profile.modulator?.patternSet(named: "sim488")?.pattern(angle: 1, phase: 0))
        try d.modulator?.show(pattern: spec.index)
        try d.lasers["l488"]!.setPower(mW: 100)
        try d.lasers["l488"]!.setEnabled(true)
        try d.camera.start(pool: pool)
        defer { d.camera.stop() }
        let (f, px) = try grab(d, pool: pool)
        #expect(f.state.pattern == spec.index && f.state.lasers == ["l488"] && f.state.exposureMs == 5)
        let n = 64, mean = px.reduce(0, +) / Double(px.count)
        func dft(_ kx: Double, _ ky: Double) -> Double {
            var re = 0.0, im = 0.0
            for y in 0..<n { for x in 0..<n {
                let ph = -2 * .pi * (kx * (Double(x) - 32) + ky * (Double(y) - 32)) * p.pixelSizeUm
                re += (px[y * n + x] - mean) * cos(ph); im += (px[y * n + x] - mean) * sin(ph)
            } }
            return (re * re + im * im).squareRoot()
        }
        let atPattern = dft(spec.kx, spec.ky)
        let rotated = dft(-spec.ky, spec.kx)  // same |k|, 90° away: no pattern there
        #expect(atPattern > 4 * rotated)
    }

    @Test func photonTransferFollowsPoissonGaussianModel() throws {
        // Two frames of the same scene: their difference removes the structure; its variance is
        // 2·(gain·(signal) + (gain·read)²) summed over pixels of similar signal.
        let (p, d, _) = try setup()
        let pool = FramePool(slots: 4, bytes: 64 * 64 * 2)
        try d.modulator?.show(pattern: -1)
        try d.lasers["l488"]!.setPower(mW: 100)
        try d.lasers["l488"]!.setEnabled(true)
        try d.camera.start(pool: pool)
        defer { d.camera.stop() }
        let (_, a) = try grab(d, pool: pool)
        let (_, b) = try grab(d, pool: pool)
        let cam = p.rig.cameraProfile
        let meanSignal = zip(a, b).map { ($0 + $1) / 2 - cam.offsetADU }.reduce(0, +) / Double(a.count)
        let diffVar = stats(zip(a, b).map { $0 - $1 }).variance
        let predicted = 2 * (cam.gainADUPerE * meanSignal + pow(cam.readNoiseE * cam.gainADUPerE, 2))
        #expect(meanSignal > 5)
        #expect(abs(diffVar / predicted - 1) < 0.2)
    }

    @Test func droppedFrameIsExposedButNotDelivered() throws {
        let (_, d, _) = try setup()
        let cam = try #require(d.camera as? SimulatedCamera)
        cam.inject(.dropFrame(1))
        let pool = FramePool(slots: 4, bytes: 64 * 64 * 2)
        try cam.start(pool: pool)
        defer { cam.stop() }
        for _ in 0..<3 { try cam.trigger() }
        let f0 = try #require(try cam.nextFrame(timeoutMs: 3000)); f0.slot?.release()
        let f2 = try #require(try cam.nextFrame(timeoutMs: 3000)); f2.slot?.release()
        #expect(f0.frameID == 0 && f2.frameID == 2 && cam.exposedCount == 3)
    }

    @Test func disconnectedCameraThrows() throws {
        let (_, d, _) = try setup()
        let cam = try #require(d.camera as? SimulatedCamera)
        cam.inject(.disconnect(afterFrames: 0))
        try cam.start(pool: FramePool(slots: 2, bytes: 64 * 64 * 2))
        defer { cam.stop() }
        try cam.trigger()
        #expect(throws: MoireError.self) { _ = try cam.nextFrame(timeoutMs: 3000) }
    }

    @Test func framesAreReproducibleForASeed() throws {
        func one() throws -> [Double] {
            let (_, d, _) = try setup(32)
            try d.lasers["l488"]!.setPower(mW: 50); try d.lasers["l488"]!.setEnabled(true)
            try d.modulator?.show(pattern: 0)
            try d.camera.start(pool: FramePool(slots: 2, bytes: 32 * 32 * 2))
            defer { d.camera.stop() }
            return try grab(d, pool: FramePool(slots: 1, bytes: 8)).1
        }
        #expect(try one() == one())
    }
}

@Suite struct TimingAndSpecimenTests {
    let dir = Fixtures.tempDir("hw2")

    @Test func internalTriggerFreeRunsAtExposurePlusReadoutPeriod() throws {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, roi: 64))
        let clock = VirtualClock()
        let (d, _) = try Fixtures.devices(for: p, clock: clock)
        let cam = d.camera
        try cam.configure(CameraSettings(width: 64, height: 64, exposureMs: 4, trigger: .internal))
        try cam.start(pool: FramePool(slots: 8, bytes: 64 * 64 * 2))
        defer { cam.stop() }
        var starts: [Int64] = []
        while starts.count < 5 {
            let f = try #require(try cam.nextFrame(timeoutMs: 3000))
            starts.append(f.exposureStartNs); f.slot?.release()
        }
        let readout = p.rig.cameraProfile.readoutMs(rows: 64) * 1e6
        let period = Int64(max(4e6, readout))
        #expect(zip(starts.dropFirst(), starts).allSatisfy { $0 - $1 == period })
    }

    @Test func groundTruthTIFFSpecimenIsImaged() throws {
        // A bright square on black, imaged widefield: the frame is brightest inside the square.
        let truth = "\(dir)/truth.tif"
        let l = RecordingLayout(run: "gt", name: "gt", mode: "widefield", channels: ["x"], excitationNm: [], emissionNm: [],
                                timepoints: 1, zPlanes: 1, angles: 1, phases: 1, width: 128, height: 128, pixel: .uint16,
                                pixelSizeUm: 0.0325, zStepUm: 0, objectiveNA: 1, magnification: 1, protocolFile: "", rigFile: "")
        let w = try OMETiffWriter(path: truth, layout: l)
        var px = [UInt16](repeating: 0, count: 128 * 128)
        for y in 40..<88 { for x in 40..<88 { px[y * 128 + x] = 1000 } }
        let h = FrameHeader(run: "gt", seq: 0, index: 0, t: 0, channel: "x", c: 0, angle: 0, phase: 0, z: 0, width: 128, height: 128, pixelSizeUm: 0.0325)
        try px.withUnsafeBytes { try w.write(header: h, payload: $0) }
        try w.finish()
        let spec = Fixtures.write("moire: 1\nkind: tiff\ntiff: truth.tif\ntiff_pixel_um: 0.0325\nbrightness: 10\nbackground: 0\n", to: "gt.yaml", in: dir)
        let rigText = try String(contentsOfFile: Fixtures.path("sim-hardware/rigs/multisim.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "../profiles", with: Fixtures.path("sim-hardware/profiles"))
            .replacingOccurrences(of: "../specimens/filaments.yaml", with: spec)
        let rig = Fixtures.write(rigText, to: "gt-rig.yaml", in: dir)
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, mode: "widefield", roi: 64, rig: rig))
        let (d, _) = try Fixtures.devices(for: p)
        try d.camera.configure(CameraSettings(width: 64, height: 64, exposureMs: 5, trigger: .software))
        try d.modulator?.show(pattern: -1)
        try d.lasers["l488"]!.setPower(mW: 50); try d.lasers["l488"]!.setEnabled(true)
        try d.camera.start(pool: FramePool(slots: 2, bytes: 64 * 64 * 2))
        defer { d.camera.stop() }
        try d.camera.trigger()
        let f = try #require(try d.camera.nextFrame(timeoutMs: 3000))
        let v: [Double] = f.slot!.withBytes { raw in let b = raw.bindMemory(to: UInt16.self); return (0..<4096).map { Double(b[$0]) } }
        f.slot?.release()
        // The 48×48 truth square at 0.0325 µm is 24×24 camera pixels (0.065 µm) in the centre.
        let inside = stats((26..<38).flatMap { y in (26..<38).map { v[y * 64 + $0] } }).mean
        let outside = stats((0..<8).flatMap { y in (0..<64).map { v[y * 64 + $0] } }).mean
        #expect(inside > outside + 100)
        #expect(abs(outside - p.rig.cameraProfile.offsetADU) < 3)
    }
}
