import Foundation
import Logging
import MoireCore
import MoireReconstruction
import MoireStorage
import MoireTransport

/// Frames of one stream gathered into stacks per time point and channel, each frame in the slot its
/// header names (`slot`), never by arrival order. A stack goes to the worker thread when the frame
/// of its last slot (in plan order) arrives; a newer stack replaces one still waiting (counted as
/// skipped behind), or in virtual time waits for the worker to take it. At the run's stop, stacks still filling go too, with their missing slots. The
/// receiving thread only copies pixels. Shared by the light-sheet and the 3D-SIM volume stages.
// Sendable by hand: mutable state guarded by `done` (DispatchSemaphore), `lock` (NSCondition).
final class StackQueue: @unchecked Sendable {
    final class Stack {
        var planes: [[Float]]
        var received: [Bool]
        var headers: [FrameHeader?]
        init(slots: Int, pixels: Int) {
            planes = [[Float]](repeating: [Float](repeating: 0, count: pixels), count: slots)
            received = [Bool](repeating: false, count: slots); headers = [FrameHeader?](repeating: nil, count: slots)
        }
        /// The first header that came (its t, c, run), if any.
        var first: FrameHeader? { headers.lazy.compactMap { $0 }.first }
        var missing: [Int] { received.indices.filter { !received[$0] } }
    }

    let stream: String, slots: Int, width: Int, height: Int
    private let slot: (FrameHeader) -> Int?
    private let lock = NSCondition()
    private var filling: [String: Stack] = [:]
    private var queue: [Stack] = []
    private var finished = false
    private var stacksComplete = 0
    private var skippedBehind = 0
    private var runID = ""
    private let done = DispatchSemaphore(value: 0)
    /// Where the stage's run start is republished (set by `start`).
    private var republish: RawBus?
    /// In virtual time: a complete stack waits for the worker to take the one before it instead of
    /// replacing it; the wait holds the reader and so, through the frame pool, the simulated camera
    /// (the clock contract: a simulated run skips nothing, whatever the load).
    var backpressure = Backpressure.drop

    init(stream: String, slots: Int, width: Int, height: Int, slot: @escaping (FrameHeader) -> Int?) {
        self.stream = stream; self.slots = slots; self.width = width; self.height = height; self.slot = slot
    }

    /// Runs the stage on a thread of its own: `process` on every stack handed over, the run's start
    /// republished on `output`'s bus, and at the end `output` closed and the stage's own run stop
    /// published there (`summary`: volumes made, stacks not made into volumes).
    func start(
        name: String, logger: Logger, output: VolumeOutput, process: @escaping (Stack) throws -> Void,
        drain: @escaping () -> Void = {}, summary: @escaping () -> (volumes: Int, notMade: Int)
    ) {
        nonisolated(unsafe) let process = process
        nonisolated(unsafe) let drain = drain
        nonisolated(unsafe) let summary = summary
        republish = output.bus
        nonisolated(unsafe) let end = { [self] in
            let (volumes, notMade) = summary()
            let stop = RunStop(
                run: runID, reason: "completed", error: nil, frames: volumes, missing: notMade, planned: 0,
                stoppedNs: unixTimeNs())
            try? output.bus.publishRun(Wire.encode(stop))
        }
        let t = Thread { [self] in
            defer { done.signal() }
            while true {
                lock.lock()
                while queue.isEmpty && !finished { lock.wait() }
                guard !queue.isEmpty else { lock.unlock(); break }
                let stack = queue.removeFirst()
                lock.broadcast()
                lock.unlock()
                do { try process(stack) } catch {
                    logger.error("\(name): stack skipped", metadata: ["error": "\(error)"])
                }
            }
            drain()
            end()
        }
        t.name = name
        t.start()
    }

    func join(timeoutSeconds: Double) -> Bool { done.wait(timeout: .now() + timeoutSeconds) == .success }

    /// Receiver: copies each frame into its stack's slot.
    func handle(_ item: BusItem) -> Bool {
        switch item {
        case .run(.start(let start), let json):
            runID = start.run
            try? republish?.publishRun(json)
            return true
        case .run(.stop, _):
            lock.lock()
            queue += filling.values.sorted { ($0.first?.t ?? 0) < ($1.first?.t ?? 0) }
            filling = [:]
            finished = true
            lock.broadcast()
            lock.unlock()
            return false
        case .frame(let h, let payload):
            guard h.stream == stream, let s = slot(h), s >= 0, s < slots else { return true }
            let key = "\(h.t)/\(h.c)"
            lock.lock()
            let stack = filling[key] ?? Stack(slots: slots, pixels: width * height)
            filling[key] = stack
            lock.unlock()
            stack.headers[s] = h
            if !h.missing, payload.count == h.byteCount, h.width == width, h.height == height {
                let n = width * height
                switch h.pixel {
                case .uint16:
                    payload.withUnsafeBytes { bytes in
                        bytes.withMemoryRebound(to: UInt16.self) { src in
                            stack.planes[s].withUnsafeMutableBufferPointer { dst in
                                for i in 0..<n { dst[i] = Float(src[i]) }
                            }
                        }
                    }
                    stack.received[s] = true
                case .float32:
                    payload.withUnsafeBytes { bytes in
                        bytes.withMemoryRebound(to: Float.self) { src in
                            stack.planes[s].withUnsafeMutableBufferPointer { dst in for i in 0..<n { dst[i] = src[i] } }
                        }
                    }
                    stack.received[s] = true
                default: break
                }
            }
            if s == slots - 1 {
                lock.lock()
                filling[key] = nil
                stacksComplete += 1
                if backpressure == .block {
                    // A hang watchdog only: the worker takes every stack in turn.
                    _ = lock.waitUnderHangWatchdog(while: { !queue.isEmpty })
                }
                if !queue.isEmpty {
                    queue.removeFirst()
                    skippedBehind += 1
                }
                queue.append(stack)
                lock.broadcast()
                lock.unlock()
            }
            return true
        }
    }

    /// The two counters under the lock.
    var counts: (complete: Int, skippedBehind: Int) {
        lock.lock(); defer { lock.unlock() }; return (stacksComplete, skippedBehind)
    }
}

/// Where a volume stage's volumes go: published on its bus (the volume, `depth` in the header,
/// and its z projection as `mip.<channel>`). When a recorder reads the bus, a volume waits (up to
/// 10 s) for an output slot rather than go unrecorded.
// Sendable by hand: used only by its volume stage's worker thread.
final class VolumeOutput: @unchecked Sendable {
    let bus: RawBus
    /// Where the stage's volumes are recorded (the pipeline attaches the recorder), if anywhere.
    let recordPath: String?
    /// A recorder reads the bus.
    var recorded = false
    /// In virtual time: a volume waits for an output slot as long as the readers take.
    var backpressure = Backpressure.drop
    private let volPool: FramePool, mipPool: FramePool
    private var mipSeq = 0
    private(set) var volumeSeq = 0
    /// Volumes neither published nor recorded: no output slot came back in time.
    private(set) var dropped = 0

    /// `volumeBytes`, `projectionBytes`: the largest volume and projection (float32).
    init(bus: RawBus, volumeBytes: Int, projectionBytes: Int, recordPath: String?) {
        self.bus = bus
        self.recordPath = recordPath
        volPool = FramePool(slots: 2, bytes: volumeBytes)
        mipPool = FramePool(slots: 4, bytes: projectionBytes)
    }

    /// Publishes `vol` with header `header` (its seq and index are this output's count) and its projection.
    func emit(_ vol: Volume, header: FrameHeader) throws {
        var vh = header
        vh.seq = volumeSeq
        vh.index = volumeSeq
        vh.depth = vol.depth
        // Recorded: up to 10 s for a slot rather than go unrecorded; blocking backpressure until the hang watchdog.
        let waitSeconds: Double? = backpressure == .block ? hangWatchdogSeconds : (recorded ? 10 : nil)
        let volumeSlot = waitSeconds.map { volPool.acquire(waitingUpToSeconds: $0) } ?? volPool.acquire()
        if let slot = volumeSlot {
            slot.withBytes { b in vol.data.withUnsafeBytes { b.copyMemory(from: $0) } }
            try bus.publish(Frame(header: vh, slot: slot))
            volumeSeq += 1
        } else {
            dropped += 1
        }
        let mip = vol.mip(along: 2)
        if let slot = mipPool.acquire() {
            slot.withBytes { b in mip.pixels.withUnsafeBytes { b.copyMemory(from: $0) } }
            var mh = vh
            mh.stream = "mip"
            mh.depth = nil
            mh.seq = mipSeq
            mh.index = mipSeq
            try bus.publish(Frame(header: mh, slot: slot))
            mipSeq += 1
        }
    }
}
