import Foundation
import Logging
import MoireCore
import MoireTransport

/// Frames of one stream gathered into stacks per time point and channel, each frame in the slot its
/// header names (`slot`), never by arrival order. A stack goes to the worker thread when the frame
/// of its last slot (in plan order) arrives; a newer stack replaces one still waiting (counted as
/// skipped behind). At the run's stop, stacks still filling go too, with their missing slots. The
/// receiving thread only copies pixels. Shared by the light-sheet and the 3D-SIM volume stages.
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
    private(set) var stacksComplete = 0
    private(set) var skippedBehind = 0
    private(set) var runID = ""
    private let done = DispatchSemaphore(value: 0)
    /// Called with the run-start event (the receiving thread), for stages that republish it.
    nonisolated(unsafe) var onRunStart: (Data) -> Void = { _ in }

    init(stream: String, slots: Int, width: Int, height: Int, slot: @escaping (FrameHeader) -> Int?) {
        self.stream = stream; self.slots = slots; self.width = width; self.height = height; self.slot = slot
    }

    /// Runs `process` on every stack handed over, then `end`, on a thread of its own.
    func start(name: String, logger: Logger, process: @escaping (Stack) throws -> Void, end: @escaping () -> Void) {
        nonisolated(unsafe) let process = process, end = end
        let t = Thread { [self] in
            defer { done.signal() }
            while true {
                lock.lock()
                while queue.isEmpty && !finished { lock.wait() }
                guard !queue.isEmpty else { lock.unlock(); break }
                let stack = queue.removeFirst()
                lock.unlock()
                do { try process(stack) } catch { logger.error("\(name): stack skipped", metadata: ["error": "\(error)"]) }
            }
            end()
        }
        t.name = name
        t.start()
    }

    func join(timeoutSeconds: Double) -> Bool { done.wait(timeout: .now() + timeoutSeconds) == .success }

    /// Receiver: copies each frame into its stack's slot.
    func handle(_ item: BusItem) -> Bool {
        switch item {
        case .run(_, let json):
            guard let ev = try? JSONDecoder().decode(RunEvent.self, from: json) else { return true }
            if ev.event == "start" { runID = ev.run; onRunStart(json) }
            if ev.event == "stop" {
                lock.lock()
                queue += filling.values.sorted { ($0.first?.t ?? 0) < ($1.first?.t ?? 0) }
                filling = [:]
                finished = true; lock.broadcast(); lock.unlock()
                return false
            }
            return true
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
                    payload.bytes.withMemoryRebound(to: UInt16.self) { src in
                        stack.planes[s].withUnsafeMutableBufferPointer { dst in for i in 0..<n { dst[i] = Float(src[i]) } }
                    }
                    stack.received[s] = true
                case .float32:
                    payload.bytes.withMemoryRebound(to: Float.self) { src in
                        stack.planes[s].withUnsafeMutableBufferPointer { dst in for i in 0..<n { dst[i] = src[i] } }
                    }
                    stack.received[s] = true
                default: break
                }
            }
            if s == slots - 1 {
                lock.lock()
                filling[key] = nil
                stacksComplete += 1
                if !queue.isEmpty { queue.removeFirst(); skippedBehind += 1 }
                queue.append(stack)
                lock.signal()
                lock.unlock()
            }
            return true
        }
    }

    /// The two counters under the lock.
    var counts: (complete: Int, skippedBehind: Int) { lock.lock(); defer { lock.unlock() }; return (stacksComplete, skippedBehind) }
}
