import Foundation
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoirePipeline
import MoireTransport

/// Figures of `moire bench transport`, each beside its peer from the same run.
public struct TransportBenchReport: Sendable {
    public var busGBps: Double
    public var memcpyGBps: Double
    public var cameraFPS: Double
    public var cameraLost: Int
    public var fileWriteFPS: Double
    public var frames: Int
}

/// Measures the in-process raw bus and the recording path.
public enum TransportBench {
    /// Raw-bus throughput: `frames` 512×512 uint16 frames published zero-copy to one subscriber thread.
    public static func busThroughput(frames: Int, width: Int = 512, height: Int = 512) throws -> (
        bus: Double, memcpy: Double
    ) {
        let bytes = width * height * 2
        let pool = FramePool(slots: 32, bytes: bytes)
        let bus = try RawBus()
        let sub = try BusSubscriber(endpoint: bus.endpoint)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var received = 0
        let t = Thread {
            while received < frames {
                if case .frame(_, let payload)? = try? sub.next(timeoutMs: 1000) {
                    _ = payload.withUnsafeBytes { $0.load(fromByteOffset: bytes - 2, as: UInt16.self) }
                    received += 1
                }
            }
            done.signal()
        }
        t.start()
        try bus.waitForSubscribers(1)
        let t0 = DispatchTime.now().uptimeNanoseconds
        var i = 0
        while i < frames {
            guard let slot = pool.acquire() else { usleep(20); continue }
            let h = FrameHeader(
                run: "bench", seq: i, index: i, t: 0, channel: "bench", c: 0, angle: 0, phase: 0, z: 0,
                width: width, height: height, pixelSizeUm: 0.1)
            try bus.publish(Frame(header: h, slot: slot))
            i += 1
        }
        done.wait()
        let busSecs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        // Peer: one memcpy per frame into a ring of 32 frame buffers (what a copying bus pays at least).
        let src = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let ring = UnsafeMutableRawPointer.allocate(byteCount: bytes * 32, alignment: 64)
        memset(src, 1, bytes)
        memset(ring, 0, bytes * 32)
        var check = 0
        let m0 = DispatchTime.now().uptimeNanoseconds
        for f in 0..<frames {
            src.storeBytes(of: UInt8(truncatingIfNeeded: f), as: UInt8.self)
            memcpy(ring + (f % 32) * bytes, src, bytes)
            check &+= Int(ring.load(fromByteOffset: (f % 32) * bytes, as: UInt8.self))
        }
        let memSecs = Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9
        if check == -1 { print(check) }
        src.deallocate(); ring.deallocate()
        let total = Double(bytes * frames) / 1e9
        return (total / busSecs, total / memSecs)
    }

    /// The simulated camera free-running (virtual clock: as fast as it renders) with recording on.
    public static func cameraWithRecording(protocolFile: String, frames: Int, dir: String) throws -> (
        fps: Double, lost: Int, delivered: Int
    ) {
        var p = try AcquisitionProtocol.load(file: protocolFile)
        p.timepoints = max(1, frames / p.planesPerTimepoint)
        var o = PipelineOptions()
        o.recordingPath = "\(dir)/bench-camera.ome.tif"
        o.noPublish = true
        let pipe = try AcquisitionPipeline(protocol: p, options: o, clock: VirtualClock())
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = try pipe.run()
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return (Double(r.run.delivered) / secs, r.run.missing, r.run.delivered)
    }

    /// Plain write(2) of the same bytes per frame: the file-write baseline.
    public static func fileWrite(frames: Int, bytes: Int, dir: String) throws -> Double {
        let path = "\(dir)/bench-plain.raw"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw MoireError(.io, "cannot create \(path)") }
        defer { close(fd); unlink(path) }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buf.deallocate() }
        memset(buf, 7, bytes)
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<frames { _ = write(fd, buf, bytes) }
        return Double(frames) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }
}
