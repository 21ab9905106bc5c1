import Foundation
import MoireCore
import MoireReconstruction
import Testing

/// `moire reconstruct --parameters FILE`: parameters written by `--params-out` used as given.
@Suite struct SIMParametersFileTests {
    static func angle(_ kx: Double, modulation: Double = 0.6) -> SIMAngleParameters {
        var a = SIMAngleParameters(
            kx: kx, ky: 0.5, phases: [0.1, 2.2, 4.3], modulation: modulation, confidence: 12, source: "estimated",
            flagged: true, reason: "weak")
        a.orderLeak = OrderLeak(ringStep: 0.1, attenuation: [0.5, 1])
        return a
    }

    static func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moire-params-\(UUID()).json").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func whatParamsOutWroteIsReadBackAsFixed() throws {
        let written = [
            SIMParameters(angles: [Self.angle(3), Self.angle(-1.5), Self.angle(-1.4)]),
            SIMParameters(angles: [Self.angle(9), Self.angle(9), Self.angle(9)]),
        ]
        let path = try Self.write(String(decoding: try JSONEncoder().encode(written), as: UTF8.self))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let read = try SIMParameters.load(file: path, angles: 3, phases: 3)
        #expect(read.angles.map(\.kx) == [3, -1.5, -1.4])
        #expect(read.angles.allSatisfy { $0.source == "fixed" && !$0.flagged && $0.reason == nil })
        #expect(read.angles[0].phases == [0.1, 2.2, 4.3])
        #expect(read.angles[0].orderLeak == written[0].angles[0].orderLeak)
    }

    @Test func badFilesAreRefusedWithTheirPlace() throws {
        let oneSet = String(
            decoding: try JSONEncoder().encode(SIMParameters(angles: [Self.angle(3), Self.angle(2)])), as: UTF8.self)
        let badModulation = String(
            decoding: try JSONEncoder().encode(
                SIMParameters(angles: [Self.angle(3), Self.angle(2, modulation: 0), Self.angle(1)])), as: UTF8.self)
        let cases: [(text: String, says: String)] = [
            ("{\"angles\": [", "not SIM parameters"),
            ("{\"angles\": [{\"kx\": 1}]}", "missing ky"),
            ("[]", "no phase set"),
            (oneSet, "2 orientations"),
            (badModulation, "angle 1"),
        ]
        for (text, says) in cases {
            let path = try Self.write(text)
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try SIMParameters.load(file: path, angles: 3, phases: 3)
                Issue.record("\(text) was accepted")
            } catch let error as MoireError {
                #expect(error.description.contains(path), "\(error)")
                #expect(error.description.contains(says), "\(error)")
            }
        }
        #expect(throws: MoireError.self) { try SIMParameters.load(file: "/nonexistent/p.json", angles: 3, phases: 3) }
    }
}
