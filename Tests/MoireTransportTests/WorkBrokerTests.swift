import Foundation
import MoireCore
import MoireTransport
import Testing

/// A job's payload: its sequence number; a result: the number doubled, and who made it.
private func job(_ sequence: Int) -> WorkItem {
    WorkItem(sequence: sequence, parts: [withUnsafeBytes(of: Int64(sequence)) { Data($0) }])
}

private func doubled(by name: String, delayMs: UInt32 = 0) -> @Sendable (WorkItem) throws -> WorkItem {
    { item in
        if delayMs > 0 { usleep(delayMs * 1000) }
        let value = item.parts[0].withUnsafeBytes { $0.load(as: Int64.self) }
        return WorkItem(
            sequence: item.sequence, parts: [withUnsafeBytes(of: value * 2) { Data($0) }, Data(name.utf8)])
    }
}

/// Reads `count` results and checks each is the doubled job, in order, exactly once.
private func collect(_ broker: WorkBroker, count: Int) -> (ok: Bool, makers: [String]) {
    var makers: [String] = []
    for expected in 0..<count {
        // A hang watchdog: a result that never comes fails the test instead of blocking it.
        guard let result = broker.nextResult(timeoutMs: 60_000), result.sequence == expected, result.parts.count == 2
        else { return (false, makers) }
        let value = result.parts[0].withUnsafeBytes { $0.load(as: Int64.self) }
        guard value == Int64(2 * expected) else { return (false, makers) }
        makers.append(String(decoding: result.parts[1], as: UTF8.self))
    }
    return (true, makers)
}

@Suite(.serialized) struct WorkBrokerTests {
    var timing: WorkTiming {
        var t = WorkTiming()
        t.heartbeatMs = 100
        t.livenessBeats = 5
        return t
    }

    /// Two workers over CURVE on loopback share the jobs; results come back in order, each once.
    @Test func twoCurveWorkersShareTheJobsAndResultsComeInOrder() throws {
        let server = try CurveKeyPair.generate()
        let clients = try (0..<2).map { _ in try CurveKeyPair.generate() }
        let broker = try WorkBroker(
            endpoint: "tcp://127.0.0.1:*", access: .curve(server: server, authorizedWorkers: clients.map(\.publicKey)),
            timing: timing, fallback: doubled(by: "local"))
        defer { broker.stop() }
        let workers = try (0..<2).map { index in
            try WorkWorker(
                endpoint: broker.endpoint, name: "w\(index)", curve: (server.publicKey, clients[index]), timing: timing,
                process: doubled(by: "w\(index)", delayMs: 2))
        }
        for worker in workers { try worker.start() }
        defer { for worker in workers { worker.stop() } }
        let deadline = Date().addingTimeInterval(60)
        while broker.liveWorkers < 2, Date() < deadline { usleep(10_000) }
        #expect(broker.liveWorkers == 2)
        for sequence in 0..<200 { broker.submit(job(sequence)) }
        let (ok, makers) = collect(broker, count: 200)
        #expect(ok)
        #expect(Set(makers) == ["w0", "w1"], "\(Set(makers))")
        let counts = broker.counts
        #expect(counts.completedBy.values.reduce(0, +) == 200 && counts.duplicates == 0, "\(counts)")
    }

    /// A worker that dies with jobs in hand (no answer, no goodbye) is declared dead after its
    /// missed heartbeats; its job goes to the other worker; nothing is lost or done twice.
    @Test func aDeadWorkersJobGoesToAnotherAndNothingIsLost() throws {
        let broker = try WorkBroker(endpoint: "tcp://127.0.0.1:*", timing: timing, fallback: doubled(by: "local"))
        defer { broker.stop() }
        let steady = try WorkWorker(
            endpoint: broker.endpoint, name: "steady", timing: timing, process: doubled(by: "steady", delayMs: 3))
        let doomed = try WorkWorker(
            endpoint: broker.endpoint, name: "doomed", timing: timing, process: doubled(by: "doomed", delayMs: 3))
        try steady.start()
        try doomed.start()
        defer { steady.stop() }
        let deadline = Date().addingTimeInterval(60)
        while broker.liveWorkers < 2, Date() < deadline { usleep(10_000) }
        for sequence in 0..<300 { broker.submit(job(sequence)) }
        while doomed.jobsDone < 20, Date() < deadline { usleep(1000) }
        doomed.crash()
        let (ok, makers) = collect(broker, count: 300)
        #expect(ok)
        #expect(makers.contains("doomed") && makers.contains("steady"))
        let counts = broker.counts
        #expect(counts.deadWorkers == 1, "\(counts)")
        #expect(counts.completedBy.values.reduce(0, +) == 300, "\(counts)")
        #expect(broker.liveWorkers == 1)
    }

    /// A worker is handed its next job while it runs one, so the transfer overlaps the work: while
    /// the only worker runs job 3 (of 8), job 4 has already arrived in it.
    @Test func aWorkerHoldsItsNextJobWhileItWorks() throws {
        final class WorkerBox: @unchecked Sendable {
            var worker: WorkWorker?
            var nextWasThere: Bool?
        }
        let box = WorkerBox()
        let broker = try WorkBroker(endpoint: "tcp://127.0.0.1:*", timing: timing, fallback: doubled(by: "local"))
        defer { broker.stop() }
        let worker = try WorkWorker(endpoint: broker.endpoint, name: "only", timing: timing) { item in
            if item.sequence == 3, let worker = box.worker {
                // A hang watchdog, not a speed assumption: without prefetch job 4 never comes now.
                let deadline = Date().addingTimeInterval(30)
                while worker.jobsWaiting == 0, Date() < deadline { usleep(1000) }
                box.nextWasThere = worker.jobsWaiting > 0
            }
            return try doubled(by: "only")(item)
        }
        box.worker = worker
        try worker.start()
        defer { worker.stop() }
        let deadline = Date().addingTimeInterval(60)
        while broker.liveWorkers < 1, Date() < deadline { usleep(10_000) }
        for sequence in 0..<8 { broker.submit(job(sequence)) }
        let (ok, makers) = collect(broker, count: 8)
        #expect(ok && Set(makers) == ["only"])
        #expect(box.nextWasThere == true)
    }

    /// With no worker at all, the in-process fallback does every job, in order.
    @Test func withoutWorkersTheJobsRunInProcess() throws {
        let broker = try WorkBroker(endpoint: "tcp://127.0.0.1:*", timing: timing, fallback: doubled(by: "local"))
        defer { broker.stop() }
        for sequence in 0..<50 { broker.submit(job(sequence)) }
        let (ok, makers) = collect(broker, count: 50)
        #expect(ok && Set(makers) == ["local"])
        #expect(broker.counts.completedBy == ["local": 50])
    }

    /// A worker whose key is not authorized never gets a job: the broker refuses its handshake.
    @Test func aWorkerWithAnUnknownKeyGetsNoJob() throws {
        let server = try CurveKeyPair.generate()
        let known = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let broker = try WorkBroker(
            endpoint: "tcp://127.0.0.1:*", access: .curve(server: server, authorizedWorkers: [known.publicKey]),
            timing: timing, fallback: doubled(by: "local"))
        defer { broker.stop() }
        let intruder = try WorkWorker(
            endpoint: broker.endpoint, name: "intruder", curve: (server.publicKey, stranger), timing: timing,
            process: doubled(by: "intruder"))
        try intruder.start()
        defer { intruder.stop() }
        for sequence in 0..<20 { broker.submit(job(sequence)) }
        let (ok, makers) = collect(broker, count: 20)
        #expect(ok && !makers.contains("intruder"))
        #expect(broker.liveWorkers == 0 && intruder.jobsDone == 0)
        #expect(throws: MoireError.self) {
            try WorkBroker(endpoint: "tcp://0.0.0.0:*", timing: timing, fallback: doubled(by: "local"))
        }
    }
}
