import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
import MoireTesting
import Testing

/// The real drivers (USB3 Vision, DLPC900, serial-ascii) running an acquisition against their
/// byte-level peers, through hardware-profiles/rigs/dmd-sim.yaml.
@Suite(.serialized) struct PeerRigTests {
    let dir = Fixtures.tempDir("peer-rig")
    let rig = Fixtures.path("hardware-profiles/rigs/dmd-sim.yaml")

    func make(timepoints: Int = 2, frameDeadlineMs: Int = 1000) throws -> (Runner, RigDevices, AcquisitionProtocol) {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: timepoints, rig: rig, frameDeadlineMs: frameDeadlineMs))
        let d = try DeviceFactory.make(rig: p.rig, clock: RealClock())
        return (Runner(protocol: p, devices: d, runID: "peer"), d, p)
    }

    @Test func theRigUsesTheRealDriversOnPeers() throws {
        let (_, d, _) = try make()
        #expect(d.camera is USB3VisionCamera && d.modulator is DLPC900Modulator)
        #expect(d.scanner is SerialScanner && d.stage is SerialStage && d.lasers.values.allSatisfy { $0 is SerialLaser })
        let peers = try #require(d.simulatedPeers)
        #expect(peers.camera != nil && peers.dmd != nil && peers.serial.count == 1, "one controller port shared by galvo, piezo and lasers")
    }

    @Test func a2DSIMRunDeliversFramesInOrderWithTheDMDShowingEachHeadersPattern() throws {
        let (runner, d, p) = try make()
        #expect(runner.hardwareSequenced)
        let sink = Sink()
        let r = runner.run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2), sink: sink.take)
        #expect(r.reason == "completed", "\(String(describing: r.error))")
        #expect(r.delivered == p.totalFrames && r.missing == 0)
        #expect(sink.headers.map(\.index) == Array(0..<p.totalFrames), "frames arrive in order")
        let peers = try #require(d.simulatedPeers)
        let dmd = try #require(peers.dmd)
        let profile = try #require(p.rig.modulator?.profile.modulator)
        // The controller's log: every entry that fired the camera, in order.
        let fired = dmd.shown
        #expect(fired.count == p.totalFrames)
        for (h, e) in zip(sink.headers, fired) {
            let spec = try #require(profile.pattern(index: h.state.pattern))
            #expect(spec.dmd == DMDImage(image: Int(e.imageIndex), bit: Int(e.bitPosition)), "frame \(h.index)")
            #expect(spec.angle == h.angle && spec.phase == h.phase)
        }
        #expect(peers.camera?.externalTriggers == p.totalFrames, "every exposure started on the DMD's trigger out")
        #expect(d.isSafe)
        let serial = try #require(peers.serial.values.first).state()
        #expect(serial.log.contains("TTL1=1") && serial.ttl[1] == false, "the 488 laser was switched on, and is off after the run")
    }

    /// `wiring.scan_trigger: camera`: the piezo's positions for a whole z-stack are stored in the
    /// controller once and stepped by the camera's exposure output, so every frame is exposed at its
    /// plane (as the bench saw it) with no move commanded per plane; the table is disarmed after the run.
    @Test func aZStackSteppedByTheCamerasExposureOutputExposesEveryFrameAtItsPlane() throws {
        let text = try String(contentsOfFile: rig, encoding: .utf8)
            .replacingOccurrences(of: "../../sim-hardware/", with: Fixtures.path("sim-hardware") + "/")
            .replacingOccurrences(of: " ../", with: " " + Fixtures.path("hardware-profiles") + "/")
            .replacingOccurrences(of: "  leader: modulator", with: "  leader: modulator\n  scan_trigger: camera")
        let tabled = Fixtures.write(text, to: "dmd-sim-table.yaml", in: dir)
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 2, extra: "z: {planes: 4, step_um: 0.5, start_um: 49}",
                                                                          rig: tabled))
        #expect(p.rig.scanTrigger)
        let d = try DeviceFactory.make(rig: p.rig, clock: RealClock())
        let runner = Runner(protocol: p, devices: d, runID: "table")
        let sink = Sink()
        let r = runner.run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2), sink: sink.take)
        #expect(r.reason == "completed" && r.delivered == p.totalFrames && r.missing == 0, "\(String(describing: r.error))")
        // Every frame exposed at its plane, as the simulated sensor saw the bench at the exposure's start.
        let seen = try #require(d.simulatedPeers?.camera?.sensorCamera).exposureStates
        #expect(seen.count == p.totalFrames)
        for (h, st) in zip(sink.headers, seen) { #expect(abs(st.zUm - (49 + 0.5 * Double(h.z))) < 0.01, "frame \(h.index) exposed at z \(st.zUm)") }
        let log = try #require(d.simulatedPeers?.serial.values.first).state().log
        // One table of one stack (4 planes × 9 frames), armed once; the piezo (line 2) commanded only to the first plane.
        #expect(log.filter { $0 == "ARM2=36" }.count == 1 && log.last(where: { $0.hasPrefix("ARM2") }) == "ARM2=0")
        let commanded = log.filter { $0.hasPrefix("DAC2=") }.count
        #expect(commanded == 1 + p.totalFrames, "1 commanded move and one step per exposure; found \(commanded)")
        // Without the wiring, the same run commands a move per plane and time point.
        let plain = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 2, extra: "z: {planes: 4, step_um: 0.5, start_um: 49}", rig: rig))
        let d2 = try DeviceFactory.make(rig: plain.rig, clock: RealClock())
        let r2 = Runner(protocol: plain, devices: d2, runID: "plain").run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2), sink: Sink().take)
        #expect(r2.reason == "completed")
        let log2 = try #require(d2.simulatedPeers?.serial.values.first).state().log
        #expect(!log2.contains { $0.hasPrefix("ARM2") } && log2.filter { $0.hasPrefix("DAC2=") }.count == 8)
    }

    @Test func anExposureLostInTheCameraIsABlockIdGapAndAMissingFrame() throws {
        let (runner, d, p) = try make()
        d.simulatedPeers?.camera?.inject(.dropFrame(4))
        let sink = Sink()
        let r = runner.run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2), sink: sink.take)
        #expect(r.reason == "completed" && r.missing == 1 && r.missingIndices == [4] && r.delivered == p.totalFrames - 1)
        #expect(sink.headers.map(\.index) == Array(0..<p.totalFrames) && sink.headers[4].missing)
    }

    @Test func unpluggingTheCameraMidStreamEndsTheRunWithinItsDeadlineLasersOff() throws {
        let (runner, d, p) = try make(timepoints: 6, frameDeadlineMs: 500)
        let peers = try #require(d.simulatedPeers)
        let sink = Sink()
        let start = Date()
        var vanishedAt: Date?
        let r = runner.run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2), sink: sink.take, onProgress: { prog in
            if prog.done == 12, vanishedAt == nil { vanishedAt = Date(); peers.camera?.vanish() }
        })
        let took = Date().timeIntervalSince(vanishedAt ?? start)
        #expect(r.reason == "fault")
        let message = r.error.map { "\($0)" } ?? ""
        #expect(message.contains("disconnected"), "\(message)")
        // The deadline is the driver's wall-clock one; the margin allows for a loaded machine.
        #expect(took < Double(p.frameDeadlineMs) / 1000 + 10, "stopped \(took) s after the unplug")
        #expect(r.delivered >= 12 && r.delivered < p.totalFrames)
        let serial = try #require(peers.serial.values.first).state()
        #expect(serial.ttl.values.allSatisfy { !$0 }, "every laser line commanded off: \(serial.ttl)")
        #expect(serial.log.last(where: { $0.hasPrefix("TTL1") }) == "TTL1=0")
        #expect(peers.dmd?.running == false, "the DMD sequencer stopped")
        #expect(d.lasers.values.allSatisfy { !$0.isEnabled })
    }

    /// Software-timed on the peers, the camera triggered by the controller's TTL line (rig wiring
    /// `camera_trigger`): every exposure starts on a pulse, frames arrive in order with their patterns.
    @Test func aSoftwareTimedRunTriggersTheCameraThroughTheControllersTTLLine() throws {
        let text = try String(contentsOfFile: rig, encoding: .utf8)
            .replacingOccurrences(of: "leader: modulator        # the DLPC900 runs each pattern set; its trigger out 1 fires the camera",
                                  with: "leader: software\n  camera_trigger: {name: camtrig, profile: ../triggers/triggerscope-camera-ttl.yaml, connect: simulated-peer}")
            .replacingOccurrences(of: "../cameras/", with: Fixtures.path("hardware-profiles/cameras/"))
            .replacingOccurrences(of: "../modulators/", with: Fixtures.path("hardware-profiles/modulators/"))
            .replacingOccurrences(of: "../scanners/", with: Fixtures.path("hardware-profiles/scanners/"))
            .replacingOccurrences(of: "../stages/", with: Fixtures.path("hardware-profiles/stages/"))
            .replacingOccurrences(of: "../lasers/", with: Fixtures.path("hardware-profiles/lasers/"))
            .replacingOccurrences(of: "../triggers/", with: Fixtures.path("hardware-profiles/triggers/"))
            .replacingOccurrences(of: "../../sim-hardware/", with: Fixtures.path("sim-hardware/"))
        let rigFile = Fixtures.write(text, to: "dmd-software.yaml", in: dir)
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 1, rig: rigFile, frameDeadlineMs: 1000))
        let d = try DeviceFactory.make(rig: p.rig, clock: RealClock())
        let runner = Runner(protocol: p, devices: d, runID: "ttl")
        #expect(!runner.hardwareSequenced && d.cameraTrigger is SerialTriggerLine)
        let sink = Sink()
        let r = runner.run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2), sink: sink.take)
        #expect(r.reason == "completed" && r.delivered == p.totalFrames, "\(String(describing: r.error))")
        #expect(sink.headers.map(\.index) == Array(0..<p.totalFrames))
        let peers = try #require(d.simulatedPeers)
        #expect(peers.camera?.externalTriggers == p.totalFrames, "one exposure per TTL pulse")
        let log = try #require(peers.serial.values.first).state()
        #expect(log.log.filter { $0 == "TTL3=1" }.count == p.totalFrames && log.ttl[3] == false)
        #expect(d.isSafe)
    }
}
