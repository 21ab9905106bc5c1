import Foundation
import MoireConfig
import MoireCore
import MoireTesting
import Testing

/// Structure-aware fuzzing of the protocol and rig readers (the security issue's deliverable 5):
/// mutated real files, 0 crashes, 0 hangs, every refusal a MoireError at its place. `make fuzz`
/// runs 100 000 inputs per reader; the suite runs fewer.
@Suite(.serialized) struct ConfigFuzzTests {
    let dir = Fixtures.tempDir("config-fuzz")

    /// The repository's YAML files of a folder, with relative paths made absolute so that a mutated
    /// copy written elsewhere still finds its rig and profiles.
    func seeds(_ folders: [String]) throws -> [[UInt8]] {
        var texts: [[UInt8]] = []
        for folder in folders {
            let base = Fixtures.path(folder)
            for name in try FileManager.default.contentsOfDirectory(atPath: base).sorted() where name.hasSuffix(".yaml") {
                let text = try String(contentsOfFile: "\(base)/\(name)", encoding: .utf8)
                texts.append(Array(text.replacingOccurrences(of: ": ../", with: ": \(base)/../").utf8))
            }
        }
        return texts
    }

    func run(_ name: String, folders: [String], seed: UInt64, load: (String) throws -> Void) throws {
        let seeds = try seeds(folders)
        let file = "\(dir)/\(name).yaml"
        var fuzzer = Fuzzer(seed: seed, maximumBytes: 64 * 1024)
        let report = fuzzer.campaign(name, seeds: seeds, count: Fuzzer.inputCount(fallback: 1500)) { input in
            try Data(input).write(to: URL(fileURLWithPath: file))
            try load(file)
        }
        print(report)
        #expect(report.unplacedErrors == 0, "\(report.unplacedExample ?? "")")
        #expect(report.hangs == 0)
        #expect(report.accepted >= seeds.count, "the seeds themselves must load: \(report)")
        #expect(report.refused > 0)
    }

    @Test func protocolFilesSurviveMutation() throws {
        try run("protocol", folders: ["sim-hardware/protocols"], seed: 0xF022_0001) {
            _ = try AcquisitionProtocol.load(file: $0)
        }
    }

    @Test func rigFilesSurviveMutation() throws {
        try run("rig", folders: ["sim-hardware/rigs", "hardware-profiles/rigs"], seed: 0xF022_0002) {
            _ = try Rig.load(file: $0)
        }
    }

    /// Inputs a campaign once crashed on (kept in Tests/Data/fuzz): each is refused at its place.
    /// rig-duplicate-key-cr-lines.yaml: a duplicated key in a file with carriage-return line breaks,
    /// where Yams' line count ran past the lines the error message searched (a range trap).
    @Test func inputsThatOnceCrashedAreRefusedAtTheirPlace() throws {
        let folder = Fixtures.path("Tests/Data/fuzz")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }
        #expect(!names.isEmpty)
        for name in names {
            do {
                _ = try Rig.load(file: "\(folder)/\(name)")
                Issue.record("\(name) was accepted")
            } catch let e as MoireError {
                #expect(e.place?.contains(name) == true, "\(e)")
            }
        }
    }
}
