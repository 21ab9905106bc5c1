import Foundation
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation

/// `moire bench usb`: frames per second, MB/s and CPU time per frame streamed from the simulated
/// USB3 Vision device through the driver (GenCP software trigger, leader/payload/trailer assembly,
/// copy into the frame pool), beside the same transfers read straight off the transport with no
/// driver (the peer figure: what moving the bytes alone costs here).
public enum USBBench {
    public struct Row: Sendable {
        public var width: Int, height: Int, frames: Int
        public var driverFPS: Double, driverMBps: Double, cpuMsPerFrame: Double
        public var rawFPS: Double, rawMBps: Double
    }

    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(
            u.ru_stime.tv_usec) / 1e6
    }

    public static func run(profileFile: String, sizes: [(Int, Int)] = [(512, 512), (2048, 2048)], seconds: Double = 2)
        throws -> [Row]
    {
        let profile = try DeviceProfile.load(file: profileFile)
        guard let cp = profile.camera else { throw MoireError(.config, "not a camera profile", place: profileFile) }
        var rows: [Row] = []
        for (w, h) in sizes {
            let bytes = w * h * 2
            // Through the driver.
            let peer = SimulatedU3VCamera(profile: cp)
            peer.constantImage = true
            peer.stream.transferBytes = 1 << 20
            let cam = try USB3VisionCamera(name: "bench", profile: cp, control: peer.control, stream: peer.stream)
            try cam.configure(CameraSettings(width: w, height: h, exposureMs: 1, trigger: .software))
            let pool = FramePool(slots: 4, bytes: bytes)
            try cam.start(pool: pool)
            var n = 0
            let c0 = cpuSeconds()
            let t0 = Date()
            while Date().timeIntervalSince(t0) < seconds {
                try cam.trigger()
                guard let f = try cam.nextFrame(timeoutMs: 2000) else {
                    throw MoireError(.deadline, "no frame from the peer")
                }
                f.slot?.release()
                n += 1
            }
            let dt = Date().timeIntervalSince(t0)
            let cpu = cpuSeconds() - c0
            cam.stop()
            // The same device sending the same images; transfers read with no driver.
            let raw = SimulatedU3VCamera(profile: cp)
            raw.constantImage = true
            raw.stream.transferBytes = 1 << 20
            let ctl = GenCPChannel(transport: raw.control)
            func reg(_ f: String) -> UInt64 { cp.registers[f]!.address }
            try ctl.writeU32(reg("Width"), UInt32(w)); try ctl.writeU32(reg("Height"), UInt32(h))
            try ctl.writeU32(reg("TriggerMode"), 1)
            if let src = cp.registers["TriggerSource"], let v = src.values["software"] {
                try ctl.writeU32(src.address, v)
            }
            try ctl.writeU32(SimulatedU3VCamera.sirm + U3V.SIRM.control, 1)
            try ctl.writeU32(reg("AcquisitionStart"), 1)
            var m = 0
            var got = 0
            let t1 = Date()
            while Date().timeIntervalSince(t1) < seconds {
                try ctl.writeU32(reg("TriggerSoftware"), 1)
                while let t = try raw.stream.read(maxBytes: 1 << 20, timeoutMs: 0) { got += t.count }
                m += 1
            }
            guard got >= m * bytes else {
                throw MoireError(.hardware, "the peer sent \(got) bytes for \(m) images of \(bytes)")
            }
            let dr = Date().timeIntervalSince(t1)
            let mb = Double(bytes) / 1e6
            rows.append(
                Row(
                    width: w, height: h, frames: n, driverFPS: Double(n) / dt, driverMBps: Double(n) * mb / dt,
                    cpuMsPerFrame: cpu / Double(max(n, 1)) * 1000, rawFPS: Double(m) / dr, rawMBps: Double(m) * mb / dr)
            )
        }
        return rows
    }
}
