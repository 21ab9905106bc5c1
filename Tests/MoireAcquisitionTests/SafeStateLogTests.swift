import Foundation
import Logging
import MoireAcquisition
import MoireConfig
import MoireCore
import MoireHardware
import MoireSimulation
import MoireTesting
import Testing

/// Keeps every log record it is given (level, message, metadata).
// Sendable by hand: records guarded by `lock`.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [(level: Logger.Level, message: String, metadata: Logger.Metadata)] = []

    var records: [(level: Logger.Level, message: String, metadata: Logger.Metadata)] {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }

    func append(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) {
        lock.lock()
        stored.append((level, message, metadata))
        lock.unlock()
    }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(
            level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
            function: String, line: UInt
        ) {
            log.append(level, message.description, self.metadata.merging(metadata ?? [:]) { $1 })
        }
    }
}

/// The security issue's R8: every ending of a run says the safe state reached, device by device.
@Suite struct SafeStateLogTests {
    let dir = Fixtures.tempDir("safelog")

    @Test func everyEndingOfARunLogsTheSafeStateDeviceByDevice() throws {
        for fault in [false, true] {
            let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir))
            let (devices, _) = try Fixtures.devices(for: p)
            if fault { (devices.camera as! SimulatedCamera).inject(.disconnect(afterFrames: 3)) }
            let log = CapturedLog()
            let runner = Runner(protocol: p, devices: devices, runID: "t", logger: log.logger)
            let result = runner.run(pool: FramePool(slots: 16, bytes: 64 * 64 * 2)) { $0.release() }
            #expect(result.reason == (fault ? "fault" : "completed"))
            let safe = try #require(log.records.first { $0.message == "hardware safe" }, "fault \(fault)")
            #expect(safe.level == .notice && safe.metadata["reason"] == "\(result.reason)")
            #expect(!devices.lasers.isEmpty)
            for laser in devices.lasers.keys { #expect(safe.metadata["laser \(laser)"] == "off") }
            #expect(safe.metadata.keys.contains { $0.hasPrefix("modulator ") })
            #expect(safe.metadata.contains { $0.key.hasPrefix("camera ") && $0.value == "stopped" })
            #expect(!log.records.contains { $0.level == .critical })
        }
    }

    @Test func aDeviceLeftUnsafeIsNamed() throws {
        let p = try AcquisitionProtocol.load(file: Fixtures.smallProtocol(in: dir))
        let (devices, _) = try Fixtures.devices(for: p)
        let laser = try #require(devices.lasers.values.first)
        try laser.setEnabled(true)
        let unsafe = devices.safeStateReport.filter { !$0.safe }
        #expect(unsafe.count == 1 && unsafe[0].device == "laser \(laser.name)")
        devices.makeSafe()
        let report = devices.safeStateReport
        #expect(report.allSatisfy { $0.safe })
    }
}
