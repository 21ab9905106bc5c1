import Foundation
import Logging
import MoireTransport

/// Stacks a stage hands to worker processes, and their results taken back in order: what the
/// stage keeps about each stack until its result comes (`Pending`: headers, parameters), at most
/// `limit` out at once, a collector thread that hands each result with what was kept to the stage,
/// and, after the last stack, the wait for the ones still out. The 3D-SIM and light-sheet stages
/// share it (the 2D-SIM stage has its own, with its per-set backlog).
// Sendable by hand: `sent`, `nextSequence` and `submissionsEnded` guarded by `changed`.
final class OrderedWork<Pending>: @unchecked Sendable {
    let broker: WorkBroker
    private let limit: Int
    private var sent: [Int: Pending] = [:]
    private var nextSequence = 0
    private var submissionsEnded = false
    private let changed = NSCondition()
    private let collected = DispatchSemaphore(value: 0)
    private var collecting = false

    init(broker: WorkBroker, limit: Int) {
        self.broker = broker
        self.limit = max(1, limit)
    }

    /// Hands a job (its parts) to the broker, keeping `pending` for its result; waits while
    /// `limit` jobs are out.
    func submit(parts: [Data], keeping pending: Pending) {
        changed.lock()
        while sent.count >= limit { changed.wait() }
        let sequence = nextSequence
        nextSequence += 1
        sent[sequence] = pending
        changed.unlock()
        broker.submit(WorkItem(sequence: sequence, parts: parts))
    }

    /// Starts the collector thread: `handle` gets each result, in submission order, with what was
    /// kept for it. With `expectedWorkers` (the protocol's `workers: N`) it first waits up to 30 s
    /// for that many to connect (until they do, jobs run in process); the workers it found.
    @discardableResult
    func start(name: String, expectedWorkers: Int?, handle: @escaping (WorkItem, Pending) -> Void) -> Int {
        nonisolated(unsafe) let handle = handle
        if let expectedWorkers {
            // A hang watchdog, not a speed assumption.
            let deadline = Date().addingTimeInterval(30)
            while broker.liveWorkers < expectedWorkers, Date() < deadline { usleep(10_000) }
        }
        changed.lock()
        collecting = true
        changed.unlock()
        let collector = Thread { [self] in
            defer { collected.signal() }
            while true {
                if let result = broker.nextResult(timeoutMs: 100) {
                    changed.lock()
                    let pending = sent.removeValue(forKey: result.sequence)
                    changed.broadcast()
                    changed.unlock()
                    if let pending { handle(result, pending) }
                    continue
                }
                changed.lock()
                let over = submissionsEnded && sent.isEmpty
                changed.unlock()
                if over { return }
            }
        }
        collector.name = name
        collector.start()
        return broker.liveWorkers
    }

    /// After the last submission: waits until every job out has come back (a hang watchdog of
    /// `timeoutSeconds`; an error naming `what` is logged when it runs out), stops the broker, and
    /// returns the jobs each worker did.
    func finish(timeoutSeconds: Double, what: String, logger: Logger) -> [String: Int] {
        changed.lock()
        submissionsEnded = true
        let started = collecting
        changed.broadcast()
        changed.unlock()
        if started, collected.wait(timeout: .now() + timeoutSeconds) == .timedOut {
            logger.error("\(what) still out at workers after \(Int(timeoutSeconds)) s; the run ends without them")
        }
        broker.stop()
        return broker.counts.completedBy
    }
}
