import DequeModule
import Foundation
import MoireConfig
import MoireCore
import MoireFFT
import MoireHardware

/// A physically simulated sCMOS camera.
///
/// Each exposure reads the bench (`SimWorld`) at its start: the pattern on the modulator, the
/// lasers emitting and their power, the stage z. The expected photon count per pixel is
/// `brightness · power · exposure · (B0 + m·Re(e^{iφ}·B1)) + background` from the `OpticalModel`;
/// then photoelectrons ~ Poisson(QE · photons) (clipped at full well), ADU = offset + gain·e⁻ +
/// N(0, (gain·read noise)²), rounded and clamped to 16 bit. A profile that states
/// `calibration.noise_correlation` gets that correlation: the frame's noise (all of it, shot and
/// read) is filtered by the correlation's kernel (Σ K² = 1, so each pixel's variance stays), as
/// on-chip binning or resampling spreads it. No laser on ⇒ a dark frame.
/// Frames are delivered after exposure + readout on the camera's clock. Noise is seeded per
/// frame id, so a run is reproducible.
// Sendable by hand: state under `cond`; caches: worker only.
public final class SimulatedCamera: Camera, FaultInjecting, @unchecked Sendable {
    public let name: String
    public let profile: CameraProfile
    private let world: SimWorld
    private let specimen: SpecimenSpec?
    private let optics: Optics
    private let clock: MoireClock
    private let seed: UInt64
    /// The correlation the profile states (pixel-independent noise when it states none).
    private let noiseCorrelation: NoiseCorrelation
    /// Guards the acquisition state below; its waits run on the camera's clock.
    private let cond: ClockCondition
    private var settings = CameraSettings(width: 512, height: 512, exposureMs: 10, trigger: .software)
    private var model: OpticalModel?
    private var pool: FramePool?
    private var acquiring = false
    private var pending: Deque<(id: Int, startNs: Int64, snap: SimWorld.Snapshot)> = []
    private var ready: Deque<CapturedFrame> = []
    private var exposed = 0
    private var faults: [CameraFault] = []
    private var disconnected = false
    private var stalled = false
    /// Bumped by every `start`: a worker of an earlier acquisition sees the change and ends.
    private var generation = 0
    private var dose: [String: Double] = [:]
    /// Called at the end of every exposure (the camera's exposure output falling): wires to a
    /// controller's trigger input (`wiring.scan_trigger`).
    nonisolated(unsafe) public var onExposureEnd: (() -> Void)?
    /// What the bench was at each rendered exposure's start (at least the last 10 000), for tests that check
    /// where frames were really exposed when the driver between cannot report it.
    public var exposureStates: [DeviceState] { cond.lock(); defer { cond.unlock() }; return exposureLog }
    private var exposureLog: [DeviceState] = []

    /// The rig's light sheet: with a 3D specimen (`beads`) the camera renders the inclined plane at the
    /// current scan position (stage, or galvo) instead of a 2D specimen.
    private let lightSheet: LightSheetSpec?
    private var sheetRenderers: [Double: LightSheetRenderer] = [:]
    private var samplePixelUm = 0.1

    public init(
        name: String, profile: CameraProfile, world: SimWorld, specimen: SpecimenSpec?, optics: Optics,
        clock: MoireClock, seed: UInt64 = 1, lightSheet: LightSheetSpec? = nil
    ) {
        self.name = name; self.profile = profile; self.world = world; self.specimen = specimen
        self.optics = optics; self.clock = clock; self.seed = seed; self.lightSheet = lightSheet
        noiseCorrelation = NoiseCorrelation(lags: profile.noiseCorrelation)
        cond = clock.makeCondition()
    }

    var rendersLightSheet: Bool { lightSheet != nil && specimen?.kind == .beads }

    /// Widefield and SIM on a 3D specimen (`beads`) without a light sheet (square ROIs up to 256):
    /// the focal plane at the stage's z through the 3D PSF (`SIM3DSimulator.BandModel`: the
    /// simulator's cell-like specimen, seeded by the rig's specimen; its middle at the stage's home). A
    /// three-beam pattern (`order2_modulation` in its set) adds order 1 with its axial modulation
    /// cos(2π kz Δz) fixed to the focal plane and order 2 at 2k; a two-beam pattern order 1 alone.
    func rendersVolume(_ s: CameraSettings) -> Bool {
        lightSheet == nil && specimen?.kind == .beads && s.width == s.height && s.width % 2 == 0 && s.width >= 16
            && s.width <= 256
    }
    private var volumeModels: [String: (model: SIM3DSimulator.BandModel, norm: Float)] = [:]
    private var volumeSidebands: [String: (b1: [Complex32], b2: [Complex32]?)] = [:]
    static let volumeGrid = (planes: 32, dzUm: 0.125)

    /// The band model for an emission wavelength and order 1's kz (made once; seconds at 128²).
    private func volumeModel(emissionNm: Double, kz: Double) -> (model: SIM3DSimulator.BandModel, norm: Float)? {
        let w = settings.width
        guard let specimen else { return nil }
        let key = "\(emissionNm)/\(String(format: "%.5f", kz))/\(w)/\(samplePixelUm)"
        if let m = volumeModels[key] { return m }
        var sim = SIM3DSimulator()
        sim.n = w; sim.pixelUm = samplePixelUm; sim.nz = Self.volumeGrid.planes; sim.dzUm = Self.volumeGrid.dzUm
        sim.optics = Widefield3D(na: optics.objectiveNA, immersionIndex: optics.immersionIndex, emissionNm: emissionNm)
        sim.kz = kz; sim.specimenSeed = specimen.seed
        guard let m = try? SIM3DSimulator.BandModel(sim) else { return nil }
        let entry = (m, 1 / max(m.b0.max() ?? 1, 1e-12))
        volumeModels[key] = entry
        return entry
    }

    /// Expected photons per unit brightness of the focal plane at `zUm` under `spec` (nil: uniform).
    private func volumePlane(zUm: Double, spec: PatternSpec?, excitationNm: Double) -> [Float]? {
        let emission = excitationNm + 37
        let threeBeam = spec?.order2Modulation != nil
        let kz =
            spec.flatMap { s in
                threeBeam
                    ? ThreeBeam.kz(
                        kUm: hypot(s.kx, s.ky), excitationNm: excitationNm, immersionIndex: optics.immersionIndex) : nil
            } ?? 0
        guard let (model, norm) = volumeModel(emissionNm: emission, kz: kz) else { return nil }
        let n = settings.width
        let plane = n * n
        let nz = Self.volumeGrid.planes
        let f = min(max(zUm / Self.volumeGrid.dzUm + Double(nz / 2), 0), Double(nz - 1))
        let z0 = min(Int(f), nz - 2)
        let t = Float(f - Double(z0))
        var out = [Float](repeating: 0, count: plane)
        for i in 0..<plane { out[i] = norm * ((1 - t) * model.b0[z0 * plane + i] + t * model.b0[(z0 + 1) * plane + i]) }
        guard let spec else { return out }
        let key = "\(emission)/\(kz)/\(spec.kx)/\(spec.ky)/\(threeBeam)/\(n)/\(samplePixelUm)"
        let bands: (b1: [Complex32], b2: [Complex32]?)
        if let b = volumeSidebands[key] {
            bands = b
        } else {
            if threeBeam {
                let (b1, b2) = model.sidebands(kx: spec.kx, ky: spec.ky); bands = (b1, b2)
            } else {
                bands = (model.twoBeamSideband(kx: spec.kx, ky: spec.ky), nil)
            }
            volumeSidebands[key] = bands
        }
        let m1 = Float(spec.modulation)
        let m2 = Float(spec.order2Modulation ?? 0)
        let c1 = Float(cos(spec.phaseRad))
        let s1 = Float(sin(spec.phaseRad))
        let c2 = Float(cos(2 * spec.phaseRad))
        let s2 = Float(sin(2 * spec.phaseRad))
        for i in 0..<plane {
            let a = bands.b1[z0 * plane + i]
            let b = bands.b1[(z0 + 1) * plane + i]
            let re = (1 - t) * a.re + t * b.re
            let im = (1 - t) * a.im + t * b.im
            out[i] += norm * m1 * (c1 * re - s1 * im)
            if let b2 = bands.b2 {
                let p = b2[z0 * plane + i]
                let q = b2[(z0 + 1) * plane + i]
                out[i] += norm * m2 * (c2 * ((1 - t) * p.re + t * q.re) - s2 * ((1 - t) * p.im + t * q.im))
            }
        }
        return out
    }

    /// The light-sheet renderer for an emission wavelength (the PSF depends on it).
    private func sheetRenderer(emissionNm: Double) -> LightSheetRenderer? {
        guard let ls = lightSheet, let specimen, specimen.kind == .beads else { return nil }
        if let r = sheetRenderers[emissionNm] { return r }
        guard
            let o = try? LightSheetOptics(
                na: optics.objectiveNA, immersionIndex: optics.immersionIndex, emissionNm: emissionNm,
                sheetThicknessUm: ls.thicknessUm)
        else { return nil }
        let beads = LightSheetRenderer.beads(
            count: specimen.puncta, sizeUm: specimen.sizeUm, seed: specimen.seed, optics: o)
        let fil = LightSheetRenderer.filaments(count: specimen.filaments, sizeUm: specimen.sizeUm, seed: specimen.seed)
        let r = LightSheetRenderer(
            angleDeg: ls.angleDeg, pixelUm: samplePixelUm, optics: o, emitters: beads + fil,
            weights: fil.isEmpty
                ? []
                : [Double](repeating: 1, count: beads.count)
                    + [Double](repeating: LightSheetRenderer.filamentWeight, count: fil.count))
        sheetRenderers[emissionNm] = r
        return r
    }

    /// Adds a fault to produce during the next acquisition.
    public func inject(_ fault: CameraFault) { cond.lock(); faults.append(fault); cond.unlock() }

    public func configure(_ s: CameraSettings) throws {
        guard profile.exposureMs.contains(s.exposureMs) else {
            throw MoireError(
                .hardware, "exposure \(s.exposureMs) ms outside \(profile.exposureMs)", place: "camera \(name)")
        }
        guard profile.binning.contains(s.binning), s.width * s.binning <= profile.sensorWidth,
            s.height * s.binning <= profile.sensorHeight,
            s.width >= profile.roiMin, s.height >= profile.roiMin
        else {
            throw MoireError(
                .hardware, "ROI \(s.width)×\(s.height) binning \(s.binning) not possible", place: "camera \(name)")
        }
        guard profile.triggerModes.contains(s.trigger.rawValue) else {
            throw MoireError(.hardware, "trigger mode \(s.trigger.rawValue) not supported", place: "camera \(name)")
        }
        cond.lock(); defer { cond.unlock() }
        guard !acquiring else { throw MoireError(.state, "cannot configure while acquiring", place: "camera \(name)") }
        let px = optics.samplePixelUm(cameraPixelUm: profile.pixelUm, binning: s.binning)
        if px != samplePixelUm { sheetRenderers = [:]; samplePixelUm = px }
        if rendersVolume(s) {
            model = nil
        } else if let specimen, !rendersLightSheet,
            model == nil || model!.width != s.width || model!.height != s.height || model!.pixelUm != px
        {
            model = try OpticalModel(
                specimen: specimen, width: s.width, height: s.height, pixelUm: px, na: optics.objectiveNA)
        }
        settings = s
    }

    /// Precomputes the blurred images for the patterns and lasers a run will use (so the first frames are on time).
    public func prepare(patterns: [PatternSpec?], emissionNm: [Double]) throws {
        if rendersVolume(settings) {
            for e in emissionNm {
                // Widefield frames need the model without a pattern; patterned runs only their patterns'.
                if patterns.allSatisfy({ $0 == nil }) { _ = volumePlane(zUm: 0, spec: nil, excitationNm: e - 37) }
                for p in patterns.compactMap({ $0 }) { _ = volumePlane(zUm: 0, spec: p, excitationNm: e - 37) }
            }
            return
        }
        guard let model else { return }
        for e in emissionNm {
            _ = try model.widefield(emissionNm: e)
            for p in patterns.compactMap({ $0 }) { _ = try model.sideband(kx: p.kx, ky: p.ky, emissionNm: e) }
        }
    }

    public func start(pool: FramePool) throws {
        cond.lock(); defer { cond.unlock() }
        guard !acquiring else { throw MoireError(.state, "already acquiring", place: "camera \(name)") }
        guard pool.slotBytes >= settings.width * settings.height * 2 else {
            throw MoireError(
                .hardware, "frame pool slots are too small for \(settings.width)×\(settings.height)",
                place: "camera \(name)")
        }
        self.pool = pool
        acquiring = true; exposed = 0; pending = []; ready = []; disconnected = false; stalled = false
        generation += 1
        let gen = generation
        clock.startThread(name: "moire.sim.camera") { [self] in self.run(generation: gen) }
    }

    public func trigger() throws {
        cond.lock(); defer { cond.unlock() }
        if disconnected { throw MoireError(.hardware, "camera disconnected", place: "camera \(name)") }
        guard acquiring, settings.trigger != .internal else { return }
        exposeLocked()
    }

    /// Starts one exposure now (lock held).
    private func exposeLocked(startNs: Int64? = nil) {
        if stalled { return }
        let id = exposed
        for f in faults {
            if case .stall(let n) = f, id >= n { stalled = true; return }
        }
        exposed += 1
        pending.append((id, startNs ?? clock.nowNs(), world.snapshot()))
        cond.broadcast()
    }

    private func run(generation gen: Int) {
        let expNs = Int64(settings.exposureMs * 1e6)
        let readNs = Int64(profile.readoutMs(rows: settings.height * settings.binning) * 1e6)
        // Internal trigger: exposures start every max(exposure, readout) (rolling shutter, overlapped readout).
        let period = max(expNs, readNs, 1)
        var nextInternal = clock.nowNs()
        while true {
            cond.lock()
            // Waits for an exposure: a trigger, or the internal trigger's next start.
            while acquiring && generation == gen {
                if settings.trigger == .internal {
                    while clock.nowNs() >= nextInternal {
                        exposeLocked(startNs: nextInternal)
                        nextInternal += period
                    }
                }
                if !pending.isEmpty { break }
                _ = cond.wait(untilNs: settings.trigger == .internal ? nextInternal : nil)
            }
            guard acquiring, generation == gen else { cond.unlock(); return }
            let job = pending.removeFirst()
            let faultsNow = faults
            cond.unlock()
            clock.sleep(untilNs: job.startNs + expNs)
            onExposureEnd?()  // the exposure output's falling edge
            clock.sleep(untilNs: job.startNs + expNs + readNs)
            if faultsNow.contains(.dropFrame(job.id)) { continue }
            if faultsNow.contains(where: {
                if case .disconnect(let n) = $0 { return job.id >= n }; return false
            }) {
                cond.lock(); disconnected = true; cond.broadcast(); cond.unlock()
                continue
            }
            // Backpressure: real time drops and counts; virtual time waits for a consumer (time stands still).
            // A frame with no slot is lost; the pool counts it (the run reports it as pool exhaustion).
            guard let slot = pool?.acquire(for: clock.backpressure) else { continue }
            let state = render(job: job, into: slot)
            cond.lock()
            exposureLog.append(state)
            if exposureLog.count >= 20_000 { exposureLog.removeFirst(10_000) }  // trimmed in blocks, not per frame
            cond.unlock()
            var bytes = settings.width * settings.height * 2
            if faultsNow.contains(.malformed(job.id)) { bytes /= 2 }
            let frame = CapturedFrame(
                frameID: job.id, slot: slot, byteCount: bytes, width: settings.width, height: settings.height,
                exposureStartNs: job.startNs, state: state)
            cond.lock()
            if acquiring && generation == gen { ready.append(frame); cond.broadcast() } else { slot.release() }
            cond.unlock()
        }
    }

    /// One illumination term of a frame: `scale·(b0 + m·(c·Re b1 − s·Im b1)) + background`.
    private struct Term: Sendable {
        var b0: [Float]
        var b1: [Complex32]?
        var scale: Float, m: Float, c: Float, s: Float, bg: Float
    }

    private func render(job: (id: Int, startNs: Int64, snap: SimWorld.Snapshot), into slot: FrameSlot) -> DeviceState {
        let w = settings.width
        let h = settings.height
        let snap = job.snap
        let exposureMs = settings.exposureMs
        var terms: [Term] = []
        if let model, let specimen, snap.pattern != -2 {
            for l in snap.lasers {
                let emission = l.wavelengthNm + 37
                let bleach = exp(-specimen.bleachPerMwS * (dose[l.name] ?? 0))
                dose[l.name, default: 0] += l.powerMw * exposureMs / 1000
                guard let b0 = try? model.widefield(emissionNm: emission) else { continue }
                var t = Term(
                    b0: b0, b1: nil, scale: Float(specimen.brightness * l.powerMw * exposureMs * bleach), m: 0, c: 1,
                    s: 0,
                    bg: Float(specimen.background * l.powerMw * exposureMs))
                if let spec = snap.spec, let b1 = try? model.sideband(kx: spec.kx, ky: spec.ky, emissionNm: emission) {
                    t.b1 = b1; t.m = Float(spec.modulation); t.c = Float(cos(spec.phaseRad));
                    t.s = Float(sin(spec.phaseRad))
                }
                terms.append(t)
            }
        }
        // A 3D specimen's photons (instead of the 2D terms): with a light sheet, the inclined plane at the
        // current scan position; without, the focal plane at the stage's z.
        var rendered: [Float]?
        if rendersLightSheet, let specimen, snap.pattern != -2, !snap.lasers.isEmpty {
            let scan = lightSheet!.scan == .galvo ? snap.scannerUm : snap.zUm
            var img = [Float](repeating: 0, count: w * h)
            for l in snap.lasers {
                guard let r = sheetRenderer(emissionNm: l.wavelengthNm + 37) else { continue }
                let bg = Float(specimen.background * l.powerMw * exposureMs)
                for i in 0..<img.count { img[i] += bg }
                // Lattice SIM: the modulator's pattern structures the sheet (in camera coordinates).
                let pattern = snap.spec.map {
                    LightSheetRenderer.Pattern(kx: $0.kx, ky: $0.ky, phaseRad: $0.phaseRad, modulation: $0.modulation)
                }
                img.withUnsafeMutableBufferPointer {
                    r.add(
                        scanUm: scan, width: w, height: h, peak: specimen.brightness * l.powerMw * exposureMs,
                        pattern: pattern, into: $0.baseAddress!)
                }
            }
            rendered = img
        }
        if rendersVolume(settings), let specimen, snap.pattern != -2, !snap.lasers.isEmpty {
            var img = [Float](repeating: 0, count: w * h)
            for l in snap.lasers {
                let bleach = exp(-specimen.bleachPerMwS * (dose[l.name] ?? 0))
                dose[l.name, default: 0] += l.powerMw * exposureMs / 1000
                guard
                    let p = volumePlane(zUm: snap.zUm - snap.stageHomeUm, spec: snap.spec, excitationNm: l.wavelengthNm)
                else { continue }
                let scale = Float(specimen.brightness * l.powerMw * exposureMs * bleach)
                let bg = Float(specimen.background * l.powerMw * exposureMs)
                for i in 0..<img.count { img[i] += scale * p[i] + bg }
            }
            rendered = img
        }
        let renderedPhotons = rendered
        let qe = profile.qe
        let gain = profile.gainADUPerE
        let offset = profile.offsetADU
        let readADU = profile.readNoiseE * gain
        let full = profile.fullWellE
        let chunks = 8
        let base = seed &* 0x9E37_79B9 &+ UInt64(job.id) &* 0x1_0000
        let allTerms = terms
        if !profile.noiseCorrelation.isEmpty {
            // Correlated noise: the expected ADU and the noise first, then the noise filtered.
            var expected = [Float](repeating: 0, count: w * h)
            var noise = [Float](repeating: 0, count: w * h)
            expected.withUnsafeMutableBufferPointer { expectedOut in
                noise.withUnsafeMutableBufferPointer { noiseOut in
                    nonisolated(unsafe) let expectedOut = expectedOut
                    nonisolated(unsafe) let noiseOut = noiseOut
                    DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                        var rng = SimRandom(seed: base &+ UInt64(chunk))
                        for i in (w * h * chunk / chunks)..<(w * h * (chunk + 1) / chunks) {
                            var photons: Float = renderedPhotons?[i] ?? 0
                            for t in allTerms {
                                var v = t.b0[i]
                                if let b1 = t.b1 { v += t.m * (t.c * b1[i].re - t.s * b1[i].im) }
                                photons += t.scale * v + t.bg
                            }
                            let mean = min(Double(max(0, photons)) * qe, full)
                            let e = min(rng.poisson(Double(max(0, photons)) * qe), full)
                            expectedOut[i] = Float(offset + gain * mean)
                            noiseOut[i] = Float(gain * (e - mean) + readADU * rng.normalPair().0)
                        }
                    }
                }
            }
            let correlated = noiseCorrelation.filter(noise, width: w, height: h)
            slot.withBytes { raw in
                let out = raw.bindMemory(to: UInt16.self)
                for i in 0..<(w * h) {
                    out[i] = UInt16(min(65535, max(0, (expected[i] + correlated[i]).rounded())))
                }
            }
            return DeviceState(
                pattern: snap.pattern, lasers: snap.lasers.map(\.name), zUm: snap.zUm, exposureMs: exposureMs)
        }
        slot.withBytes { raw in
            nonisolated(unsafe) let out = raw.bindMemory(to: UInt16.self)
            // Rows split into chunks rendered in parallel; each chunk has its own seeded noise stream.
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                var rng = SimRandom(seed: base &+ UInt64(chunk))
                let y0 = h * chunk / chunks
                let y1 = h * (chunk + 1) / chunks
                var spare: Double?
                for i in (y0 * w)..<(y1 * w) {
                    var photons: Float = renderedPhotons?[i] ?? 0
                    for t in allTerms {
                        var v = t.b0[i]
                        if let b1 = t.b1 { v += t.m * (t.c * b1[i].re - t.s * b1[i].im) }
                        photons += t.scale * v + t.bg
                    }
                    let e = min(rng.poisson(Double(max(0, photons)) * qe), full)
                    let g: Double
                    if let sp = spare {
                        g = sp; spare = nil
                    } else {
                        let pair = rng.normalPair(); g = pair.0; spare = pair.1
                    }
                    let adu = offset + gain * e + readADU * g
                    out[i] = UInt16(min(65535, max(0, adu.rounded())))
                }
            }
        }
        return DeviceState(
            pattern: snap.pattern, lasers: snap.lasers.map(\.name), zUm: snap.zUm, exposureMs: exposureMs)
    }

    public func nextFrame(timeoutMs: Int) throws -> CapturedFrame? {
        let deadline = clock.deadline(afterMs: Double(timeoutMs))
        cond.lock(); defer { cond.unlock() }
        while ready.isEmpty {
            if disconnected { throw MoireError(.hardware, "camera disconnected", place: "camera \(name)") }
            if !cond.wait(untilNs: deadline) { break }
        }
        if disconnected && ready.isEmpty { throw MoireError(.hardware, "camera disconnected", place: "camera \(name)") }
        return ready.isEmpty ? nil : ready.removeFirst()
    }

    public var exposedCount: Int { cond.lock(); defer { cond.unlock() }; return exposed }

    public func stop() {
        cond.lock()
        let was = acquiring
        acquiring = false
        let leftovers = ready
        ready = []; pending = []
        cond.broadcast()
        cond.unlock()
        for f in leftovers { f.slot?.release() }
        if was { world.record("\(name).stop") }
    }

    public var isAcquiring: Bool { cond.lock(); defer { cond.unlock() }; return acquiring }
}
