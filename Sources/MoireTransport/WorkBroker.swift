import CZMQ
import Foundation
import MoireCore

/// One unit of work (a phase set, a stack) and its result: numbered by the caller, contiguous from 0.
public struct WorkItem: Sendable, Equatable {
    public var sequence: Int
    public var parts: [Data]
    public init(sequence: Int, parts: [Data]) {
        self.sequence = sequence
        self.parts = parts
    }
}

/// Who may be a worker.
public enum WorkAccess: Sendable {
    /// Loopback tcp, ipc or inproc: any local process (tests, one machine).
    case local
    /// ZeroMQ CURVE: the broker proves `server`; a worker must hold one of `authorizedWorkers`.
    case curve(server: CurveKeyPair, authorizedWorkers: [CurveKey])
}

/// Timing of the broker's and the workers' heartbeats.
public struct WorkTiming: Sendable {
    /// A peer that has sent nothing for this long (while idle it sends heartbeats) is alive.
    public var heartbeatMs = 250
    /// Heartbeats missed before a peer is declared dead.
    public var livenessBeats = 4
    /// Jobs a worker holds at once: the one it runs and the ones waiting in it, so that its next
    /// job has already arrived when it finishes one (the transfer overlaps the work).
    public var jobsPerWorker = 2
    public init() {}
    var deadAfterMs: Int { heartbeatMs * livenessBeats }
}

/// The ready-worker broker of the ZeroMQ guide (Paranoid Pirate): workers connect (DEALER) to the
/// broker's ROUTER and say READY; the broker hands each job to the worker that holds the fewest
/// (of those, the one that has waited longest), at most `jobsPerWorker` per worker (one running,
/// the next already there), so a slow or full worker is never handed more; both sides send
/// heartbeats, and a worker silent for `livenessBeats` heartbeats is dead: its jobs go back to the
/// front of the queue. Results come out in sequence order, each exactly once (a late
/// result of a job already done elsewhere is dropped and counted). With no live worker, jobs run
/// in process (`fallback`), so a run never waits for a worker that is not there.
// Sendable by hand: the socket is used by the broker's thread only; every shared field is guarded by `lock`.
public final class WorkBroker: @unchecked Sendable {
    /// The endpoint as bound (`:*` resolved).
    public let endpoint: String
    private let socket: ZMQSocket
    /// Submissions, local results and `stop` wake the broker's thread at once (no polling delay).
    private let wakeReceiver: ZMQSocket
    private let wakeSender: ZMQSocket
    private let wakeLock = NSLock()
    private let timing: WorkTiming
    private let fallback: @Sendable (WorkItem) throws -> WorkItem
    private let zapDomain: String?
    /// Local access only: every peer is on this machine, so a worker's shared memory can be mapped.
    private let sharesMemory: Bool
    private let lock = NSCondition()
    private var pending: [WorkItem] = []
    private var done: [Int: WorkItem] = [:]
    private var nextOut = 0
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)
    /// Broker thread only.
    private struct Worker {
        var name: String
        var lastHeardMs: Int64
        /// Jobs handed to it and not yet answered, oldest first.
        var jobs: [WorkItem] = []
        /// The memory it shares with the broker (a worker on this machine), if any.
        var shared: BrokerSharedSpace?
    }
    private var workers: [Data: Worker] = [:]
    /// One entry per free slot of a worker (`jobsPerWorker` each), longest waiting first.
    private var ready: [Data] = []
    private var localJob: WorkItem?
    private var lastHeartbeatMs: Int64 = 0
    private var tally = Counts()
    /// Result blocks in workers' shared memory the broker is done with, to hand back (any thread
    /// adds, while the broker's `lock` may be held elsewhere: so a lock of its own).
    private let returnedBlocksLock = NSLock()
    private var returnedBlocks: [Data: [Int]] = [:]

    /// What the broker did.
    public struct Counts: Sendable, Equatable {
        /// Jobs completed, by worker name (`local` for the in-process fallback).
        public var completedBy: [String: Int] = [:]
        /// Jobs handed back to the queue because their worker died.
        public var redispatched = 0
        /// Results that came for jobs already completed (dropped).
        public var duplicates = 0
        /// Workers declared dead.
        public var deadWorkers = 0
        /// Failures of the fallback or of workers (the job's result is then its error, empty parts).
        public var failures = 0
        /// Jobs handed to workers through shared memory (workers on this machine).
        public var sharedMemoryJobs = 0
    }

    /// Binds `endpoint` and starts brokering; `fallback` runs a job in process when no worker is alive.
    public init(
        endpoint: String, access: WorkAccess = .local, timing: WorkTiming = WorkTiming(),
        fallback: @escaping @Sendable (WorkItem) throws -> WorkItem
    ) throws {
        socket = try ZMQSocket(.shared, type: .router)
        try socket.setOption(ZMQ_ROUTER_MANDATORY, 1)
        try socket.setSendTimeout(ms: 1000)
        switch access {
        case .local:
            if endpoint.hasPrefix("tcp://") { try checkLoopback(endpoint) }
            zapDomain = nil
            sharesMemory = true
        case .curve(let server, let authorized):
            guard endpoint.hasPrefix("tcp://") else {
                throw MoireError(.usage, "CURVE workers connect over tcp://", place: endpoint)
            }
            let domain = try CurveAuthenticator.shared.register(authorizedClients: authorized) { _ in }
            try socket.setOption(ZMQ_CURVE_SERVER, 1)
            try socket.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(server.secretZ85.utf8))
            try socket.setOption(ZMQ_ZAP_DOMAIN, bytes: Array(domain.utf8))
            zapDomain = domain
            sharesMemory = false
        }
        try socket.bind(endpoint)
        self.endpoint = try socket.lastEndpoint()
        let wakeEndpoint = "inproc://moire-broker-wake-\(UUID().uuidString)"
        wakeReceiver = try ZMQSocket(.shared, type: .pull)
        try wakeReceiver.bind(wakeEndpoint)
        wakeSender = try ZMQSocket(.shared, type: .push)
        try wakeSender.connect(wakeEndpoint)
        self.timing = timing
        self.fallback = fallback
        let brokerThread = Thread { [self] in serve() }
        brokerThread.name = "moire.broker"
        brokerThread.start()
        let localThread = Thread { [self] in runLocal() }
        localThread.name = "moire.broker.local"
        localThread.start()
    }

    deinit {
        if let zapDomain { CurveAuthenticator.shared.unregister(zapDomain) }
    }

    /// Queues a job (sequence numbers contiguous from 0, submitted in order).
    public func submit(_ job: WorkItem) {
        lock.lock()
        pending.append(job)
        lock.broadcast()
        lock.unlock()
        wake()
    }

    /// Wakes the broker's thread (any thread may call it).
    private func wake() {
        wakeLock.lock()
        defer { wakeLock.unlock() }
        // A full wake queue already holds a wake-up.
        try? wakeSender.send([.bytes(Data([1]))], dontWait: true)
    }

    /// The next result in sequence order, waiting up to `timeoutMs` (nil when it has not come).
    public func nextResult(timeoutMs: Int) -> WorkItem? {
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        lock.lock()
        defer { lock.unlock() }
        while done[nextOut] == nil {
            guard lock.wait(until: deadline) else { return nil }
        }
        let result = done.removeValue(forKey: nextOut)
        nextOut += 1
        return result
    }

    /// Workers alive now.
    public var liveWorkers: Int {
        lock.lock()
        defer { lock.unlock() }
        return workers.count
    }

    /// Bytes of jobs in workers' shared memory now (written and not yet let go of by the worker).
    public var sharedMemoryInUse: Int {
        lock.lock()
        defer { lock.unlock() }
        return workers.values.compactMap { $0.shared?.jobs.allocatedBytes }.reduce(0, +)
    }

    public var counts: Counts {
        lock.lock()
        defer { lock.unlock() }
        return tally
    }

    /// Stops brokering (jobs not done are dropped) and waits for the broker's thread.
    public func stop() {
        lock.lock()
        let first = !stopped
        stopped = true
        lock.broadcast()
        lock.unlock()
        wake()
        if first {
            finished.wait()
            finished.wait()
        }
    }

    private static func nowMs() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000) }

    // MARK: the broker's thread

    private func serve() {
        defer { finished.signal() }
        while true {
            lock.lock()
            let stop = stopped
            lock.unlock()
            if stop { return }
            // Heartbeats and expiries need a turn at least every heartbeat; anything else wakes it.
            let (fromWorkers, woken) =
                (try? socket.poll(with: wakeReceiver, timeoutMs: timing.heartbeatMs)) ?? (false, false)
            if woken {
                while (try? wakeReceiver.receive(dontWait: true)) != nil {}
            }
            if fromWorkers {
                while let parts = try? socket.receive(dontWait: true) { handle(parts) }
            }
            expireDeadWorkers()
            dispatch()
            handBackResultBlocks()
            sendHeartbeats()
        }
    }

    private func handle(_ message: [ZMQMessage]) {
        guard message.count >= 2 else { return }
        let identity = message[0].data
        let command = message[1].string
        let now = Self.nowMs()
        lock.lock()
        defer { lock.unlock() }
        switch command {
        case "READY":
            let name = message.count > 2 ? String(message[2].string.prefix(64)) : "worker"
            if workers[identity] == nil {
                var worker = Worker(name: name, lastHeardMs: now)
                worker.shared = mapSharedMemory(offered: Array(message.dropFirst(3)))
                if worker.shared != nil {
                    // The worker sends results through it from now on; jobs follow this message.
                    try? socket.send([.bytes(identity), .text("SHARED")], dontWait: true)
                }
                workers[identity] = worker
                ready += Array(repeating: identity, count: max(1, timing.jobsPerWorker))
            }
        case "HEARTBEAT":
            workers[identity]?.lastHeardMs = now
        case "RESULT", "RESULTREF":
            guard message.count >= 3, let sequence = Int(message[2].string) else { return }
            let parts: [Data]
            if command == "RESULT" {
                parts = message.dropFirst(3).map(\.sharedData)
            } else if workers[identity] == nil {
                // Its memory went when it was declared dead: its job is handed out again.
                return
            } else if let shared = readShared(message.dropFirst(3), from: identity) {
                parts = shared
            } else {
                // A layout that does not fit the worker's shared memory: the set failed.
                tally.failures += 1
                parts = []
            }
            var name = "a worker declared dead"
            if var worker = workers[identity] {
                worker.lastHeardMs = now
                if let held = worker.jobs.firstIndex(where: { $0.sequence == sequence }) {
                    worker.jobs.remove(at: held)
                    ready.append(identity)
                }
                workers[identity] = worker
                name = worker.name
            }
            // A late result still counts when its job is waiting to be handed out again.
            pending.removeAll { $0.sequence == sequence }
            complete(WorkItem(sequence: sequence, parts: parts), by: name)
        case "FREE":
            // Job blocks the worker is done with.
            guard message.count == 3, let offsets = PartPlacement.parse(offsets: message[2].string) else { return }
            for offset in offsets { workers[identity]?.shared?.jobs.free(offset) }
        default:
            break
        }
    }

    /// Records a result (under `lock`); a second result for the same job is dropped.
    private func complete(_ result: WorkItem, by name: String) {
        guard result.sequence >= nextOut, done[result.sequence] == nil else {
            tally.duplicates += 1
            return
        }
        done[result.sequence] = result
        tally.completedBy[name, default: 0] += 1
        lock.broadcast()
    }

    /// The shared memory a READY message offers (`memfd`, pid, descriptor, bytes, token), mapped;
    /// nil when none is offered, this broker takes workers beyond this machine, or the offer is
    /// not a worker's sealed memory file (the worker then sends its bytes over the socket).
    private func mapSharedMemory(offered: [ZMQMessage]) -> BrokerSharedSpace? {
        guard sharesMemory, offered.count == 5, offered[0].string == "memfd",
            let pid = Int32(offered[1].string), let descriptor = Int32(offered[2].string),
            let byteCount = Int(offered[3].string),
            (SharedFileLayout.minimumBytes...SharedFileLayout.maximumBytes).contains(byteCount)
        else { return nil }
        let file = try? SharedMemoryFile(
            openingFileOf: pid, descriptor: descriptor, byteCount: byteCount, token: offered[4].data)
        return file.map { BrokerSharedSpace(file: $0) }
    }

    /// The parts of a RESULTREF (layout, then the parts in the message), those in the worker's
    /// shared memory as views of it that hand their block back when released; nil when the layout
    /// is malformed, outside the worker's results' range, or the worker shares no memory (under `lock`).
    private func readShared(_ frames: ArraySlice<ZMQMessage>, from identity: Data) -> [Data]? {
        guard let shared = workers[identity]?.shared else { return nil }
        let file = shared.file
        return PartPlacement.parts(from: frames, within: shared.layout.results) { offset, length in
            Data(
                bytesNoCopy: file.base + offset, count: length,
                deallocator: .custom { [weak self] _, _ in
                    // The view keeps the mapping; the block goes back to the worker.
                    withExtendedLifetime(file) {}
                    self?.handBack(offset, to: identity)
                })
        }
    }

    /// Queues a result block for its worker and wakes the broker's thread (any thread).
    private func handBack(_ offset: Int, to identity: Data) {
        returnedBlocksLock.withLock { returnedBlocks[identity, default: []].append(offset) }
        wake()
    }

    /// Tells each worker which of its result blocks the broker is done with (broker's thread).
    private func handBackResultBlocks() {
        let returned = returnedBlocksLock.withLock {
            defer { returnedBlocks = [:] }
            return returnedBlocks
        }
        for (identity, offsets) in returned {
            // A worker gone since has taken its memory with it.
            for start in stride(from: 0, to: offsets.count, by: 1024) {
                let chunk = offsets[start..<min(offsets.count, start + 1024)].map(String.init).joined(separator: ",")
                try? socket.send([.bytes(identity), .text("FREE"), .text(chunk)], dontWait: true)
            }
        }
    }

    private func expireDeadWorkers() {
        let now = Self.nowMs()
        lock.lock()
        defer { lock.unlock() }
        for (identity, worker) in workers where now - worker.lastHeardMs > Int64(timing.deadAfterMs) {
            workers[identity] = nil
            ready.removeAll { $0 == identity }
            tally.deadWorkers += 1
            let unanswered = worker.jobs.filter { done[$0.sequence] == nil }
            pending.insert(contentsOf: unanswered, at: 0)
            tally.redispatched += unanswered.count
        }
    }

    private func dispatch() {
        lock.lock()
        defer { lock.unlock() }
        while !pending.isEmpty, let slot = leastBusyReadySlot() {
            let identity = ready.remove(at: slot)
            guard var worker = workers[identity] else { continue }
            let job = pending.removeFirst()
            var parts: [ZMQPart] = [.bytes(identity)]
            if let shared = worker.shared {
                // A worker on this machine: large parts are copied into its memory, not sent.
                let placements = job.parts.map { shared.place($0) }
                parts += [.text("JOBREF"), .text(String(job.sequence))]
                parts += PartPlacement.frames(job.parts, placed: placements)
                if placements.contains(where: { $0 != .inline }) { tally.sharedMemoryJobs += 1 }
            } else {
                parts += [.text("JOB"), .text(String(job.sequence))]
                parts += job.parts.map { .shared($0) }
            }
            do {
                try socket.send(parts, dontWait: true)
                worker.jobs.append(job)
                workers[identity] = worker
            } catch {
                // Unroutable (gone) or full: its jobs wait for the next worker; this one is forgotten.
                pending.insert(job, at: 0)
                let unanswered = worker.jobs.filter { done[$0.sequence] == nil }
                pending.insert(contentsOf: unanswered, at: 0)
                workers[identity] = nil
                ready.removeAll { $0 == identity }
                tally.deadWorkers += 1
            }
        }
        // No worker alive: the in-process fallback takes the oldest job.
        if workers.isEmpty, localJob == nil, !pending.isEmpty {
            localJob = pending.removeFirst()
            lock.broadcast()
        }
    }

    /// The free slot of the worker holding the fewest jobs; of those, the one waiting longest
    /// (under `lock`). Spreads the jobs over idle workers before any worker gets a second.
    private func leastBusyReadySlot() -> Int? {
        var best: (slot: Int, held: Int)?
        for (slot, identity) in ready.enumerated() {
            let held = workers[identity]?.jobs.count ?? 0
            if best == nil || held < best!.held { best = (slot, held) }
        }
        return best?.slot
    }

    private func sendHeartbeats() {
        let now = Self.nowMs()
        guard now - lastHeartbeatMs >= Int64(timing.heartbeatMs) else { return }
        lastHeartbeatMs = now
        lock.lock()
        let identities = Array(workers.keys)
        lock.unlock()
        for identity in identities {
            // A worker that cannot take a heartbeat is caught by its own silence.
            try? socket.send([.bytes(identity), .text("HEARTBEAT")], dontWait: true)
        }
    }

    // MARK: the in-process fallback's thread

    private func runLocal() {
        defer { finished.signal() }
        while true {
            lock.lock()
            while localJob == nil && !stopped { lock.wait() }
            guard let job = localJob, !stopped else {
                lock.unlock()
                return
            }
            lock.unlock()
            let result: WorkItem
            do {
                result = try fallback(job)
            } catch {
                lock.lock()
                tally.failures += 1
                lock.unlock()
                result = WorkItem(sequence: job.sequence, parts: [])
            }
            lock.lock()
            complete(WorkItem(sequence: job.sequence, parts: result.parts), by: "local")
            localJob = nil
            lock.unlock()
            wake()
        }
    }
}

/// A worker of a `WorkBroker`: connects (DEALER), says READY, runs each job it is handed with
/// `process` on a thread of its own, in the order they came, while its socket thread keeps the
/// heartbeats going, takes in the next job and sends the results back. When the broker is silent
/// for `livenessBeats` heartbeats it reconnects (jobs not yet started are dropped: the broker has
/// handed them to another worker).
// Sendable by hand: the socket is used by the socket thread only; shared fields guarded by `lock`.
public final class WorkWorker: @unchecked Sendable {
    public let name: String
    private let endpoint: String
    private let curve: (server: CurveKey, client: CurveKeyPair)?
    private let timing: WorkTiming
    private let process: @Sendable (WorkItem) throws -> WorkItem
    /// Bytes of memory offered to a broker on this machine (0: none).
    private let sharedMemoryBytes: Int
    /// Where `process` may write large results so they go back without a copy.
    private let resultMemory: WorkResultMemory
    private let lock = NSCondition()
    /// A result (or `stop`) wakes the socket thread at once.
    private let wakeEndpoint = "inproc://moire-worker-wake-\(UUID().uuidString)"
    private let wakeReceiver: ZMQSocket
    private let wakeSender: ZMQSocket
    /// Jobs received and not yet started, oldest first.
    private var jobs: [WorkItem] = []
    /// Results not yet sent, oldest first.
    private var results: [WorkItem] = []
    private var stopped = false
    private var crashed = false
    private var started = false
    private let finished = DispatchSemaphore(value: 0)
    private var completed = 0
    /// Times it reconnected after the broker went silent (guarded by `lock`).
    private var reconnects = 0

    /// Times it reconnected after the broker went silent.
    public var reconnections: Int {
        lock.lock()
        defer { lock.unlock() }
        return reconnects
    }

    /// Memory a worker offers a broker on its machine by default: room for the jobs and results
    /// of a few 2048 × 2048 sets. Its pages are taken only as jobs and results use them.
    public static let defaultSharedMemoryBytes = 1 << 30

    /// `sharedMemoryBytes`: offered to a broker on this machine (ipc, inproc or loopback tcp, no
    /// CURVE), which then writes jobs into it and reads results from it instead of sending them
    /// over the socket; 0 offers none. `resultMemory`: where `process` may write its large results
    /// (see `WorkResultMemory`).
    public init(
        endpoint: String, name: String, curve: (server: CurveKey, client: CurveKeyPair)? = nil,
        timing: WorkTiming = WorkTiming(), sharedMemoryBytes: Int = defaultSharedMemoryBytes,
        resultMemory: WorkResultMemory = WorkResultMemory(),
        process: @escaping @Sendable (WorkItem) throws -> WorkItem
    ) throws {
        wakeReceiver = try ZMQSocket(.shared, type: .pull)
        try wakeReceiver.bind(wakeEndpoint)
        wakeSender = try ZMQSocket(.shared, type: .push)
        try wakeSender.connect(wakeEndpoint)
        self.endpoint = endpoint
        self.name = name
        self.curve = curve
        self.timing = timing
        self.process = process
        self.sharedMemoryBytes = sharedMemoryBytes
        self.resultMemory = resultMemory
    }

    /// Jobs received and not yet started (the broker sends the next while one runs).
    public var jobsWaiting: Int {
        lock.lock()
        defer { lock.unlock() }
        return jobs.count
    }

    /// Bytes of results in the memory shared with the broker now (written and not yet freed by
    /// this worker and the broker); 0 when none is shared.
    public var sharedMemoryInUse: Int { resultMemory.bytesInUse }

    /// Jobs done so far.
    public var jobsDone: Int {
        lock.lock()
        defer { lock.unlock() }
        return completed
    }

    /// Starts the worker's threads.
    public func start() throws {
        lock.lock()
        started = true
        lock.unlock()
        let socketThread = Thread { [self] in serve() }
        socketThread.name = "moire.worker.socket"
        socketThread.start()
        let processThread = Thread { [self] in work() }
        processThread.name = "moire.worker.process"
        processThread.start()
    }

    /// Stops; a job in hand may go unanswered (the broker then hands it to another worker).
    public func stop() { end(crashing: false) }

    /// Stops at once, as a killed process would: the job in hand is never answered, no goodbye.
    public func crash() { end(crashing: true) }

    private func end(crashing: Bool) {
        lock.lock()
        let first = !stopped
        if crashing { crashed = true }
        stopped = true
        lock.broadcast()
        if first { try? wakeSender.send([.bytes(Data([1]))], dontWait: true) }
        lock.unlock()
        guard first, started else { return }
        finished.wait()
        finished.wait()
    }

    /// A broker this worker can share memory with: on this machine, without CURVE.
    private var brokerIsLocal: Bool { curve == nil && EndpointRule.bindProblem(endpoint) == nil }

    /// A new connection, READY sent (with the offer of `space`, a new shared memory file, if any).
    private func connect(offering space: WorkerSharedSpace?) throws -> ZMQSocket {
        let socket = try ZMQSocket(.shared, type: .dealer)
        if let curve {
            try socket.setOption(ZMQ_CURVE_SERVERKEY, bytes: Array(curve.server.z85.utf8))
            try socket.setOption(ZMQ_CURVE_PUBLICKEY, bytes: Array(curve.client.publicKey.z85.utf8))
            try socket.setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(curve.client.secretZ85.utf8))
        }
        try socket.setSendTimeout(ms: 1000)
        try socket.connect(endpoint)
        var ready: [ZMQPart] = [.text("READY"), .text(name)]
        if let space {
            ready += [
                .text("memfd"), .text(String(getpid())), .text(String(space.file.descriptor)),
                .text(String(space.file.byteCount)), .bytes(space.file.token),
            ]
        }
        try socket.send(ready)
        return socket
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    /// Connects and serves until stopped; a broker silent too long means a new connection.
    private func serve() {
        defer { finished.signal() }
        while !isStopped {
            do {
                // Each connection offers a file of its own: blocks the last broker still had lent
                // stay with the last one, which goes when nothing uses it any more.
                let offered =
                    sharedMemoryBytes > 0 && brokerIsLocal ? try? WorkerSharedSpace(byteCount: sharedMemoryBytes) : nil
                let socket = try connect(offering: offered)
                if session(socket, offered: offered) { return }
                lock.lock()
                reconnects += 1
                lock.unlock()
            } catch {
                Thread.sleep(forTimeInterval: Double(timing.heartbeatMs) / 1000)
            }
        }
    }

    /// One connection's life: jobs in, results and heartbeats out. True when the worker was
    /// stopped; false when the broker went silent (it is gone or restarted). `offered`: the memory
    /// offered in READY, shared once the broker says SHARED.
    private func session(_ socket: borrowing ZMQSocket, offered: WorkerSharedSpace?) -> Bool {
        var lastHeard = Date()
        var lastSent = Date()
        var shared: WorkerSharedSpace?
        defer { resultMemory.use(nil) }
        while true {
            lock.lock()
            let stop = stopped
            let answers = results
            results = []
            lock.unlock()
            if stop { return true }
            for answer in answers {
                try? socket.send(resultMessage(answer, shared: shared))
                lastSent = Date()
            }
            if let finished = shared?.takeFinishedJobs(), !finished.isEmpty {
                try? socket.send([.text("FREE"), .text(finished.map(String.init).joined(separator: ","))])
                lastSent = Date()
            }
            let (fromBroker, woken) =
                (try? socket.poll(with: wakeReceiver, timeoutMs: timing.heartbeatMs)) ?? (false, false)
            if woken {
                while (try? wakeReceiver.receive(dontWait: true)) != nil {}
            }
            while fromBroker, let message = try? socket.receive(dontWait: true) {
                lastHeard = Date()
                switch message.first?.string {
                case "JOB", "JOBREF":
                    guard let job = job(from: message, shared: shared) else { break }
                    lock.lock()
                    jobs.append(job)
                    lock.broadcast()
                    lock.unlock()
                case "SHARED":
                    shared = offered
                    resultMemory.use(offered)
                case "FREE":
                    guard message.count == 2, let offsets = PartPlacement.parse(offsets: message[1].string) else {
                        break
                    }
                    for offset in offsets { shared?.brokerFreed(offset) }
                default:
                    break
                }
            }
            if Date().timeIntervalSince(lastHeard) * 1000 > Double(timing.deadAfterMs) {
                lock.lock()
                jobs = []
                lock.unlock()
                return false
            }
            if Date().timeIntervalSince(lastSent) * 1000 >= Double(timing.heartbeatMs) {
                // Heartbeats are best effort: a broker that misses them declares this worker dead.
                try? socket.send([.text("HEARTBEAT")], dontWait: true)
                lastSent = Date()
            }
        }
    }

    /// The job a JOB or JOBREF message carries; nil without a sequence number. A JOBREF whose
    /// layout does not fit this worker's memory is a job without parts: `process` refuses it and
    /// the broker gets an empty result (the set failed) instead of waiting for it.
    private func job(from message: [ZMQMessage], shared: WorkerSharedSpace?) -> WorkItem? {
        guard message.count >= 2, let sequence = Int(message[1].string) else { return nil }
        if message[0].string == "JOB" {
            return WorkItem(sequence: sequence, parts: message.dropFirst(2).map(\.sharedData))
        }
        guard let shared,
            let parts = PartPlacement.parts(
                from: message.dropFirst(2), within: shared.layout.jobs, view: shared.jobPart)
        else { return WorkItem(sequence: sequence, parts: []) }
        return WorkItem(sequence: sequence, parts: parts)
    }

    /// A result as a message: RESULTREF with its large parts in shared memory when there is some,
    /// RESULT with every part in the message when not.
    private func resultMessage(_ answer: WorkItem, shared: WorkerSharedSpace?) -> [ZMQPart] {
        guard let shared else {
            return [.text("RESULT"), .text(String(answer.sequence))] + answer.parts.map { .shared($0) }
        }
        let placements = answer.parts.map { shared.place($0) }
        return [.text("RESULTREF"), .text(String(answer.sequence))]
            + PartPlacement.frames(answer.parts, placed: placements)
    }

    private func work() {
        defer { finished.signal() }
        while true {
            lock.lock()
            while jobs.isEmpty && !stopped { lock.wait() }
            guard !jobs.isEmpty, !crashed else {
                lock.unlock()
                return
            }
            let current = jobs.removeFirst()
            lock.unlock()
            let answer = (try? process(current)) ?? WorkItem(sequence: current.sequence, parts: [])
            lock.lock()
            if !crashed {
                results.append(WorkItem(sequence: current.sequence, parts: answer.parts))
                completed += 1
            }
            let stop = stopped
            // The wake socket is used under `lock` (here and in `end`).
            try? wakeSender.send([.bytes(Data([1]))], dontWait: true)
            lock.unlock()
            if stop { return }
        }
    }
}
