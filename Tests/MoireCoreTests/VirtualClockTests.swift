import Foundation
import MoireCore
import Testing

/// The clock contract in virtual time: time moves only when every participating thread waits on
/// the clock, and then exactly to the next deadline, however slowly the threads run.
@Suite struct VirtualClockTests {
    @Test func aDeadlinePassesOnlyWhenEveryParticipantWaits() {
        let clock = VirtualClock()
        let condition = clock.makeCondition()
        let workerStarted = DispatchSemaphore(value: 0)
        let workerMayFinish = DispatchSemaphore(value: 0)
        let workerDone = DispatchSemaphore(value: 0)
        // A participant that computes (here: blocks on a semaphore, outside the clock) holds time still.
        clock.startThread(name: "busy worker") {
            workerStarted.signal()
            workerMayFinish.wait()
            clock.sleep(ns: 50_000_000)
            workerDone.signal()
        }
        workerStarted.wait()
        let (timedOut, timedOutAt) = clock.participate { () -> (Bool, Int64) in
            condition.lock()
            defer { condition.unlock() }
            // Released from another thread after 200 ms of wall time: the 10 ms deadline must still hold.
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { workerMayFinish.signal() }
            let woken = condition.wait(untilNs: 10_000_000)
            return (!woken, clock.nowNs())
        }
        #expect(timedOut)
        // The deadline passed when the worker went to sleep, at exactly 10 ms, not at the worker's 50 ms.
        #expect(timedOutAt == 10_000_000)
        workerDone.wait()
        #expect(clock.nowNs() == 50_000_000)
    }

    @Test func aBroadcastWakesTheWaiterAtTheSignallersTime() {
        let clock = VirtualClock()
        let condition = clock.makeCondition()
        nonisolated(unsafe) var ready = false
        clock.startThread(name: "signaller") {
            clock.sleep(ns: 3_000_000)
            condition.lock()
            ready = true
            condition.broadcast()
            condition.unlock()
        }
        let wokenAt = clock.participate { () -> Int64 in
            condition.lock()
            defer { condition.unlock() }
            while !ready {
                if !condition.wait(untilNs: 1_000_000_000) { return -1 }
            }
            return clock.nowNs()
        }
        #expect(wokenAt == 3_000_000)
    }

    @Test func sleepsOfSeveralThreadsInterleaveInTimeOrder() {
        let clock = VirtualClock()
        let log = NSLock()
        nonisolated(unsafe) var events: [String] = []
        let finished = DispatchSemaphore(value: 0)
        // The starting thread takes part until both threads exist: otherwise, on a loaded machine, "a"
        // could sleep its three steps alone before "b" is started (time moves when every participant waits).
        clock.participate {
            for (name, stepNs) in [("a", Int64(3_000_000)), ("b", Int64(5_000_000))] {
                clock.startThread(name: name) {
                    for _ in 0..<3 {
                        clock.sleep(ns: stepNs)
                        log.lock()
                        events.append("\(name)@\(clock.nowNs() / 1_000_000)")
                        log.unlock()
                    }
                    finished.signal()
                }
            }
        }
        finished.wait()
        finished.wait()
        // a at 3, 6, 9 ms and b at 5, 10, 15 ms, in time order (whatever the threads' scheduling).
        #expect(events == ["a@3", "b@5", "a@6", "a@9", "b@10", "b@15"])
    }

    @Test func aSleepOutsideAnyParticipantMovesTimeAtOnce() {
        let clock = VirtualClock()
        clock.sleep(ns: 5_000_000)
        #expect(clock.nowNs() == 5_000_000)
        clock.sleep(untilNs: 1)
        #expect(clock.nowNs() == 5_000_000)
        #expect(clock.backpressure == .block)
        #expect(VirtualClock(backpressure: .drop).backpressure == .drop)
        #expect(RealClock().backpressure == .drop)
    }

    @Test func aRealClockConditionTimesOutOnTheWallClock() {
        let clock = RealClock()
        let condition = clock.makeCondition()
        condition.lock()
        let start = clock.nowNs()
        let woken = condition.wait(untilNs: start + 5_000_000)
        condition.unlock()
        #expect(!woken)
        #expect(clock.nowNs() - start >= 5_000_000)
    }
}

@Suite struct FramePoolBackpressureTests {
    @Test func aWaitingProducerGetsTheSlotAConsumerFrees() {
        let pool = FramePool(slots: 1, bytes: 64)
        let held = pool.acquire()
        #expect(held != nil)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.05) { held?.release() }
        let slot = pool.acquire(waitingUpToSeconds: 60)
        #expect(slot != nil)
        #expect(pool.waitedCount == 1 && pool.exhaustedCount == 0)
        slot?.release()
    }

    @Test func aProducerThatWaitsPastItsWatchdogCountsExhaustion() {
        let pool = FramePool(slots: 1, bytes: 64)
        let held = pool.acquire()
        #expect(pool.acquire(waitingUpToSeconds: 0.01) == nil)
        #expect(pool.waitedCount == 1 && pool.exhaustedCount == 1)
        held?.release()
    }
}
