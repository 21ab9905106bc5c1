import CZMQ
import Foundation
import MoireCore

/// How much the result bus may hold for one subscriber, and how it treats churn and the end of a run.
public struct ResultBusLimits: Sendable, Equatable {
    /// Bytes queued for one subscriber before it is skipped (its messages dropped, counted, logged).
    public var bytesPerSubscriber = 256 << 20
    /// The largest message the run will publish (a raw frame, an SR frame, a volume): the queue's
    /// length in messages is `bytesPerSubscriber / largestMessageBytes`, so the byte bound holds
    /// whatever mix of messages is queued.
    public var largestMessageBytes = 1 << 20
    /// At most one replay of `start` per this many seconds, however fast clients subscribe.
    public var startReplayInterval = 0.25
    /// How long a message waits for a full subscriber to make room before it goes to the others
    /// only: 0 in real time (a camera does not wait), long in virtual time, where every consumer is
    /// waited for and nothing is lost but by an injected fault.
    public var waitForRoomMs: Int32 = 0
    /// How long messages still queued when the bus closes keep going to their subscribers (ZeroMQ's
    /// linger): a subscriber a little behind at the end of a run still gets the tail and `stop`.
    /// The endpoint itself is released at once, so the next run can bind it.
    public var drainAtCloseMs: Int32 = 5000

    public init() {}

    /// The queue length in messages (at least 4).
    public var messagesPerSubscriber: Int32 {
        Int32(clamping: max(4, bytesPerSubscriber / max(1, largestMessageBytes)))
    }
}

/// What the result bus reports about its subscribers.
public enum ResultBusEvent: Sendable, Equatable {
    /// A subscriber's queue was full: it misses messages until it has room again (the others do
    /// not); it sees the gap in sequence numbers, and a `stop` it missed in `status`. `times`
    /// counts such overflows in this run.
    case subscriberQueueFull(times: Int)
    /// Subscriptions arrive faster than `perSecond`; `start` replays are limited.
    case subscriptionChurn(perSecond: Int)
}

/// The result bus: a PUB endpoint (loopback by default) that any ZeroMQ client can read.
///
/// It replays the last `start` when a subscriber to `run` joins, so a late joiner can interpret the
/// frames; the replay goes to every subscriber of the `run` topic (clients key on the run id), at
/// most once per `limits.startReplayInterval`. Headers keep their stream's contiguous sequence
/// numbers; missing frames go out as headers with `missing: true` and an empty payload.
///
/// Each subscriber's queue is bounded in bytes (`limits`). A subscriber whose queue is full misses
/// messages while the others get every one: each send first asks libzmq to deliver to all or none
/// (XPUB_NODROP); when a queue is full it sends again to the rest, counts the overflow and reports
/// it. libzmq then leaves that subscriber out until its queue has room again. Used from one thread.
///
/// A tcp or ipc bus has a ZeroMQ context of its own (unless given one). When the bus goes, its
/// socket closes and that context ends on a thread of its own, which waits until the queued
/// messages went out (at most `limits.drainAtCloseMs`): the caller goes on at once, and a program
/// that ends after a run calls `awaitClosedBuses()` first, or a subscriber behind it loses the tail
/// and `stop`. An inproc bus uses the process's shared context, the only one its peers can reach.
// Sendable by hand: the PUB socket is used by the publisher's one stage thread (see the doc); counters behind `lock`.
public final class ResultPublisher: @unchecked Sendable {
    private let context: ZMQContext
    /// Whether the context is this bus's own, ended when the bus goes.
    private let ownsContext: Bool
    private let socket: ZMQSocket
    public let endpoint: String
    public let limits: ResultBusLimits
    private var lastStart: Data?
    private let lock = NSLock()
    private var tally = Counts()
    private var replayPending = false
    private var lastReplay = Date.distantPast
    private var churnWindowStart = Date()
    private var churnInWindow = 0
    private var churnReported = false
    private let onEvent: @Sendable (ResultBusEvent) -> Void

    /// What the bus did so far.
    public struct Counts: Sendable, Equatable {
        /// Subscription messages received (every subscribe of every client).
        public var subscriptions = 0
        /// Messages published (each went to every subscriber that had room).
        public var sent = 0
        /// Times a subscriber's queue was full (from each, it missed messages until it had room again).
        public var subscriberQueueFull = 0
        /// `start` replays for late joiners.
        public var startReplays = 0
        /// The last `seq` published on each topic (`raw.gfp`, `sr.gfp`, …): a subscriber that
        /// missed messages or `stop` compares these with what it has.
        public var lastSequence: [String: Int] = [:]
    }

    public init(
        context: ZMQContext? = nil, endpoint: String, limits: ResultBusLimits = ResultBusLimits(),
        onEvent: @escaping @Sendable (ResultBusEvent) -> Void = { _ in }
    ) throws {
        try checkLoopback(endpoint)
        ownsContext = context == nil && !endpoint.hasPrefix("inproc://")
        self.context = context ?? (ownsContext ? ZMQContext() : .shared)
        self.limits = limits
        self.onEvent = onEvent
        socket = try ZMQSocket(self.context, type: .xpub)
        try socket.setOption(ZMQ_XPUB_VERBOSE, 1)
        try socket.setOption(ZMQ_SNDHWM, limits.messagesPerSubscriber)
        try socket.setOption(ZMQ_XPUB_NODROP, 1)
        try socket.setOption(ZMQ_LINGER, limits.drainAtCloseMs)
        if limits.waitForRoomMs > 0 { try socket.setSendTimeout(ms: limits.waitForRoomMs) }
        try Self.bind(socket, endpoint)
        self.endpoint = try socket.lastEndpoint()
    }

    deinit {
        guard ownsContext else { return }
        // The socket closes when this returns; the context's end waits for that, then for the queue.
        let context = self.context
        Self.closing.enter()
        Thread.detachNewThread {
            context.terminate()
            Self.closing.leave()
        }
    }

    /// Closed buses whose queued messages are still going out.
    private static let closing = DispatchGroup()

    /// Waits until every closed bus's queued messages went out or its drain time ran out.
    public static func awaitClosedBuses() { closing.wait() }

    /// Binds `endpoint`. libzmq releases a closed socket's listener on its own thread, a moment after
    /// the close, so an endpoint in use is tried again for up to a second: the run after a run binds
    /// the endpoint the last one just released.
    private static func bind(_ socket: borrowing ZMQSocket, _ endpoint: String) throws {
        let patience = Date(timeIntervalSinceNow: 1)
        while true {
            do {
                try socket.bind(endpoint)
                return
            } catch let e as ZMQError where e.code == EADDRINUSE && Date() < patience {
                usleep(10_000)
            } catch let e as ZMQError {
                throw MoireError(.transport, "cannot bind the result bus: \(e)", place: endpoint)
            }
        }
    }

    /// A snapshot of the counters (any thread).
    public var counts: Counts { lock.lock(); defer { lock.unlock() }; return tally }
    public var subscriptions: Int { counts.subscriptions }
    public var sent: Int { counts.sent }

    private func count(_ change: (inout Counts) -> Void) { lock.lock(); change(&tally); lock.unlock() }

    /// Handles pending subscriptions: a new subscriber to `run` gets the last `start` (coalesced).
    public func serviceSubscriptions() {
        // Bounded per call, so that a flood of subscriptions cannot hold the publisher.
        var handled = 0
        while handled < 1000, let parts = try? socket.receive(dontWait: true) {
            handled += 1
            guard let first = parts.first, first.firstByte == 1 else { continue }
            count { $0.subscriptions += 1 }
            noteChurn()
            let topic = first.withUnsafeBytes { String(decoding: $0.dropFirst(), as: UTF8.self) }
            if "run".hasPrefix(topic) || topic.hasPrefix("run") { replayPending = true }
        }
        replayStartIfDue()
    }

    private func noteChurn() {
        let now = Date()
        if now.timeIntervalSince(churnWindowStart) >= 1 {
            churnWindowStart = now
            churnInWindow = 0
        }
        churnInWindow += 1
        if churnInWindow == 100 && !churnReported {
            churnReported = true
            onEvent(.subscriptionChurn(perSecond: churnInWindow))
        }
    }

    private func replayStartIfDue() {
        guard replayPending, let lastStart, Date().timeIntervalSince(lastReplay) >= limits.startReplayInterval else {
            return
        }
        replayPending = false
        lastReplay = Date()
        if (try? deliver([.text("run"), .bytes(lastStart), .bytes(Data())])) != nil {
            count { $0.startReplays += 1 }
        }
    }

    public func publishStart(_ start: RunStart) throws {
        let json = try Wire.encode(start)
        lastStart = json
        replayPending = false
        try send([.text("run"), .bytes(json), .bytes(Data())])
    }

    /// Publishes the run's `stop` (a subscriber whose queue is full misses it, as any message, and
    /// learns the end of the run from the daemon's `status`).
    public func publishStop(_ stop: RunStop) throws {
        try send([.text("run"), .bytes(try Wire.encode(stop)), .bytes(Data())])
    }

    /// Publishes a frame (payload copied into the message: the bus may be remote).
    public func publish(header: FrameHeader, payload: UnsafeRawBufferPointer) throws {
        var h = header
        h.publishedNs = unixTimeNs()
        let data = payload.count > 0 && !h.missing ? Data(payload) : Data()
        let topic = Wire.topic(for: h)
        try send([.text(topic), .bytes(Wire.encode(h)), .bytes(data)], topic: topic, seq: h.seq)
    }

    /// Sends one message; a frame's `topic` and `seq` go into `lastSequence` under the same lock as the count.
    private func send(_ parts: [ZMQPart], topic: String? = nil, seq: Int = 0) throws {
        serviceSubscriptions()
        try deliver(parts)
        count {
            $0.sent += 1
            if let topic { $0.lastSequence[topic] = seq }
        }
    }

    /// Sends to every subscriber, or, when one's queue is full, to the others and counts the overflow.
    private func deliver(_ parts: [ZMQPart]) throws {
        do {
            try socket.send(parts, dontWait: limits.waitForRoomMs == 0)
        } catch let e as ZMQError where e.isTimeout {
            do {
                try socket.setOption(ZMQ_XPUB_NODROP, 0)
                defer { try? socket.setOption(ZMQ_XPUB_NODROP, 1) }
                try socket.send(parts, dontWait: true)
            } catch let e as ZMQError { throw e.moireError }
            count { $0.subscriberQueueFull += 1 }
            onEvent(.subscriberQueueFull(times: counts.subscriberQueueFull))
        } catch let e as ZMQError {
            throw e.moireError
        }
    }
}
