import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
import MoireTesting
import Testing

/// Collects what the runner hands on, releasing the slots.
// Sendable by hand: `headers` is appended by the runner's one delivering thread, read after the run returns.
final class Sink: @unchecked Sendable {
    var headers: [FrameHeader] = []
    func take(_ f: Frame) { headers.append(f.header); f.release() }
}

@Suite struct EventPlanTests {
    @Test func planIsTimeChannelZAnglePhaseWithPhaseFastest() throws {
        let dir = Fixtures.tempDir("plan")
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 2, channels: """
          - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 2, pattern_set: sim488}
          - {name: rfp, laser: l560, power_mw: 10, exposure_ms: 3, pattern_set: sim560}

        """))
        let plan = EventPlan(p)
        #expect(plan.events.count == 36 && plan.groupSize == 9)
        #expect(plan.events[0].phase == 0 && plan.events[1].phase == 1 && plan.events[3].angle == 1)
        #expect(plan.events[9].channel == "rfp" && plan.events[18].t == 1)
        let set = p.rig.modulator!.profile.modulator!.patternSet(named: "sim560")!
        #expect(plan.events[13].pattern == set.pattern(angle: 1, phase: 1)!.index)
    }
}

@Suite struct RunnerTests {
    let dir = Fixtures.tempDir("runner")

    func make(_ file: String) throws -> (Runner, RigDevices, SimWorld, AcquisitionProtocol) {
        let p = try AcquisitionProtocol.load(file: file)
        let (d, w) = try Fixtures.devices(for: p)
        return (Runner(protocol: p, devices: d, runID: "t"), d, w, p)
    }

    func pool() -> FramePool { FramePool(slots: 16, bytes: 64 * 64 * 2) }

    @Test(arguments: [false, true])
    func everyFrameCarriesThePlannedDeviceState(software: Bool) throws {
        let rig = software ? Fixtures.softwareRig(in: dir) : nil
        let (runner, d, _, p) = try make(Fixtures.smallProtocol(in: dir, rig: rig))
        #expect(runner.hardwareSequenced == !software)
        let sink = Sink()
        let r = runner.run(pool: pool(), sink: sink.take)
        #expect(r.reason == "completed" && r.delivered == p.totalFrames && r.missing == 0)
        #expect(r.stateMismatches == 0)
        let plan = EventPlan(p)
        #expect(sink.headers.map(\.state.pattern) == plan.events.map(\.pattern))
        #expect(sink.headers.map(\.seq) == Array(0..<p.totalFrames))
        #expect(d.isSafe)
    }

    @Test func zStackMovesTheStageForEveryPlane() throws {
        let (runner, d, _, _) = try make(Fixtures.smallProtocol(in: dir, mode: "widefield", timepoints: 1,
                                                              extra: "z: {planes: 3, step_um: 0.5, start_um: 10}"))
        let sink = Sink()
        let r = runner.run(pool: pool(), sink: sink.take)
        #expect(r.reason == "completed" && r.stateMismatches == 0)
        #expect(sink.headers.map(\.state.zUm) == [10, 10.5, 11])
        #expect(sink.headers.allSatisfy { $0.state.pattern == -1 })
        #expect(d.isSafe)
    }

    @Test func droppedFrameIsRecordedMissingAndTheRunGoesOn() throws {
        let (runner, d, _, p) = try make(Fixtures.smallProtocol(in: dir))
        (d.camera as! SimulatedCamera).inject(.dropFrame(4))
        let sink = Sink()
        let r = runner.run(pool: pool(), sink: sink.take)
        #expect(r.reason == "completed")
        #expect(r.missing == 1 && r.missingIndices == [4] && r.delivered == p.totalFrames - 1)
        #expect(sink.headers.count == p.totalFrames && sink.headers[4].missing)
        #expect(d.isSafe)
    }

    @Test func droppedLastFrameIsMissingNotAStall() throws {
        let (runner, d, _, p) = try make(Fixtures.smallProtocol(in: dir, timepoints: 1))
        (d.camera as! SimulatedCamera).inject(.dropFrame(8))
        let r = runner.run(pool: pool(), sink: Sink().take)
        #expect(r.reason == "completed" && r.missingIndices == [8] && r.delivered == p.totalFrames - 1)
    }

    @Test func malformedFrameIsCountedAndRecordedMissing() throws {
        let (runner, d, _, _) = try make(Fixtures.smallProtocol(in: dir))
        (d.camera as! SimulatedCamera).inject(.malformed(2))
        let r = runner.run(pool: pool(), sink: Sink().take)
        #expect(r.reason == "completed" && r.malformed == 1 && r.missingIndices == [2])
    }

    @Test func stallFiresTheDeadlineAndLeavesLasersOff() throws {
        let (runner, d, world, _) = try make(Fixtures.smallProtocol(in: dir, frameDeadlineMs: 200))
        (d.camera as! SimulatedCamera).inject(.stall(afterFrames: 5))
        let sink = Sink()
        let r = runner.run(pool: pool(), sink: sink.take)
        #expect(r.reason == "fault")
        #expect(r.error?.kind == .deadline)
        #expect(r.error?.message.contains("stalled") == true)
        #expect(sink.headers.count == 5)
        #expect(runner.state == .faulted)
        #expect(d.lasers.values.allSatisfy { !$0.isEmitting && !$0.isEnabled })
        #expect(d.isSafe)
        #expect(world.commandLog.last(where: { $0.hasPrefix("l488") }) == "l488.safe")
    }

    @Test func disconnectIsAFaultWithAClearError() throws {
        let (runner, d, _, _) = try make(Fixtures.smallProtocol(in: dir))
        (d.camera as! SimulatedCamera).inject(.disconnect(afterFrames: 3))
        let r = runner.run(pool: pool(), sink: Sink().take)
        #expect(r.reason == "fault" && r.error?.message.contains("disconnected") == true)
        #expect(d.isSafe)
    }

    @Test func stopRequestEndsAfterTheGroupAndAbortEndsNow() throws {
        let (runner, d, _, _) = try make(Fixtures.smallProtocol(in: dir, timepoints: 5))
        let sink = Sink()
        let r = runner.run(pool: pool(), sink: { f in
            sink.take(f)
            if f.header.index == 3 { runner.requestStop() }
        })
        #expect(r.reason == "stopped" && sink.headers.count == 9)
        #expect(d.isSafe)

        let (runner2, d2, _, _) = try make(Fixtures.smallProtocol(in: dir, timepoints: 5))
        let sink2 = Sink()
        let r2 = runner2.run(pool: pool(), sink: { f in
            sink2.take(f)
            if f.header.index == 3 { runner2.abort() }
        })
        #expect(r2.reason == "aborted" && sink2.headers.count <= 5)
        #expect(d2.isSafe)
    }

    @Test func sinkFailureIsAFaultAndDevicesGoSafe() throws {
        let (runner, d, _, _) = try make(Fixtures.smallProtocol(in: dir))
        let r = runner.run(pool: pool(), sink: { f in
            f.release()
            if f.header.index == 2 { throw MoireError(.storage, "disk full") }
        })
        #expect(r.reason == "fault" && r.error?.message == "disk full")
        #expect(d.isSafe)
    }

    @Test func exhaustedPoolLosesFramesVisiblyWhereTheCameraCannotWait() throws {
        // Real hardware (backpressure .drop): a consumer that keeps every slot loses the frames after them.
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 1))
        let clock = VirtualClock(backpressure: .drop)
        let (d, _) = try Fixtures.devices(for: p, clock: clock)
        let runner = Runner(protocol: p, devices: d, runID: "t", clock: clock)
        var held: [Frame] = []
        let r = runner.run(pool: FramePool(slots: 3, bytes: 64 * 64 * 2), sink: { held.append($0) })
        #expect(r.delivered == 3 && r.missing == p.totalFrames - 3)
        #expect(r.poolExhausted == p.totalFrames - 3)
        let reasons = held.filter(\.header.missing).map(\.header.missingReason)
        #expect(reasons == Array(repeating: .poolExhausted, count: p.totalFrames - 3))
        for f in held { f.release() }
    }

    @Test func aSlowConsumerInVirtualTimeMakesTheCameraWaitAndLosesNothing() throws {
        // Simulated hardware in virtual time (backpressure .block): a consumer that holds slots for a
        // while (wall time) stalls the camera, not the plan; nothing is lost and the waits are counted.
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir, timepoints: 2))
        let clock = VirtualClock()
        let (d, _) = try Fixtures.devices(for: p, clock: clock)
        let runner = Runner(protocol: p, devices: d, runID: "t", clock: clock)
        let releaser = DispatchQueue(label: "slow consumer")
        var headers: [FrameHeader] = []
        let r = runner.run(pool: FramePool(slots: 2, bytes: 64 * 64 * 2), sink: { frame in
            headers.append(frame.header)
            releaser.asyncAfter(deadline: .now() + 0.005) { frame.release() }
        })
        releaser.sync {}
        #expect(r.reason == "completed" && r.missing == 0 && r.delivered == p.totalFrames && r.poolExhausted == 0)
        #expect(r.poolWaits > 0)
        #expect(headers.map(\.seq) == Array(0..<p.totalFrames))
    }

    @Test func channelsWithDifferentExposuresLoseNothing() throws {
        let (runner, d, _, p) = try make(Fixtures.smallProtocol(in: dir, timepoints: 3, channels: """
          - {name: gfp, laser: l488, power_mw: 10, exposure_ms: 2, pattern_set: sim488}
          - {name: rfp, laser: l560, power_mw: 10, exposure_ms: 3, pattern_set: sim560}

        """))
        let sink = Sink()
        let r = runner.run(pool: pool(), sink: sink.take)
        #expect(r.reason == "completed" && r.missing == 0 && r.stateMismatches == 0 && r.delivered == p.totalFrames)
        #expect(sink.headers.map(\.state.exposureMs) == EventPlan(p).events.map(\.exposureMs))
        #expect(sink.headers.map(\.state.lasers) == EventPlan(p).events.map { [$0.laser] })
        #expect(d.isSafe)
    }

    @Test func pauseHoldsTheRunBetweenGroupsUntilResumed() throws {
        let (runner, d, _, p) = try make(Fixtures.smallProtocol(in: dir, timepoints: 2))
        let sink = Sink()
        nonisolated(unsafe) var sawPaused = false
        let r = runner.run(pool: pool(), sink: { f in
            sink.take(f)
            if f.header.index == 8 {
                runner.pause()
                Thread {
                    while runner.state != .paused { usleep(1000) }
                    sawPaused = true
                    runner.resume()
                }.start()
            }
        })
        #expect(sawPaused)
        #expect(r.reason == "completed" && sink.headers.count == p.totalFrames)
        #expect(d.isSafe)
    }
}
