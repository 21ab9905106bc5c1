import Foundation
import MoireCore

/// A small seeded, structure-aware fuzzer: inputs grow from valid seeds by mutations that keep
/// most of a file's structure (so the parser gets deep) and plant the values that break parsers
/// (zero, −1, 2³¹, 2⁶³, lengths beyond the file, huge counts, truncation). Deterministic from its
/// seed; bounded in inputs and in input size.
///
/// A crash is the test process dying (the suite reports it); a hang is an input that takes longer
/// than `hangSeconds`; every refusal must be a `MoireError` that names its place.
public struct Fuzzer {
    /// What a campaign saw.
    public struct Report: Sendable, CustomStringConvertible {
        public var name: String
        public var inputs = 0
        public var accepted = 0
        public var refused = 0
        /// Refusals that were not a MoireError with a place (each a failure), with an example.
        public var unplacedErrors = 0
        public var unplacedExample: String?
        /// Inputs that took longer than the hang bound (each a failure).
        public var hangs = 0
        public var slowestSeconds = 0.0

        public var description: String {
            "\(name): \(inputs) inputs, \(accepted) accepted, \(refused) refused with their place, "
                + "\(unplacedErrors) without, \(hangs) hangs, slowest \(String(format: "%.3f", slowestSeconds)) s"
        }
    }

    /// The number of inputs per campaign: `MOIRE_FUZZ_INPUTS` (make fuzz: 100 000), else `fallback`.
    public static func inputCount(fallback: Int) -> Int {
        ProcessInfo.processInfo.environment["MOIRE_FUZZ_INPUTS"].flatMap(Int.init) ?? fallback
    }

    private var random: SplitMix64
    public let maximumBytes: Int
    public var hangSeconds = 30.0

    public init(seed: UInt64, maximumBytes: Int = 1 << 20) {
        random = SplitMix64(seed: seed)
        self.maximumBytes = maximumBytes
    }

    public mutating func next() -> UInt64 { random.next() }

    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }

    /// Values that break length and offset arithmetic, as little-endian bytes of 2, 4 or 8.
    private static let interesting: [UInt64] = [
        0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
        0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF, 1 << 20, 1 << 30,
    ]

    /// One mutation of `input` (`seeds` feed splicing).
    public mutating func mutate(_ input: [UInt8], seeds: [[UInt8]]) -> [UInt8] {
        var bytes = input
        let rounds = 1 + below(4)
        for _ in 0..<rounds {
            switch below(9) {
            case 0 where !bytes.isEmpty:
                bytes[below(bytes.count)] ^= UInt8(1 << below(8))
            case 1 where !bytes.isEmpty:
                bytes[below(bytes.count)] = UInt8(truncatingIfNeeded: next())
            case 2 where bytes.count >= 8:
                // An integer field: an interesting value at an aligned offset, 2, 4 or 8 bytes wide.
                let width = [2, 4, 8][below(3)]
                let offset = below(bytes.count / width) * width
                var value = Fuzzer.interesting[below(Fuzzer.interesting.count)]
                if below(2) == 0 { value = value &+ UInt64(below(5)) &- 2 }
                for k in 0..<width where offset + k < bytes.count {
                    bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k)))
                }
            case 3:
                bytes = Array(bytes.prefix(below(bytes.count + 1)))
            case 4 where !bytes.isEmpty:
                let start = below(bytes.count)
                let length = min(bytes.count - start, 1 + below(64))
                bytes.removeSubrange(start..<(start + length))
            case 5 where !bytes.isEmpty:
                // A chunk repeated: lists and entries that grow.
                let start = below(bytes.count)
                let length = min(bytes.count - start, 1 + below(256))
                let chunk = bytes[start..<(start + length)]
                bytes.insert(contentsOf: chunk, at: below(bytes.count + 1))
            case 6:
                if let other = seeds.isEmpty ? nil : seeds[below(seeds.count)], !other.isEmpty {
                    let cut = below(bytes.count + 1)
                    let from = below(other.count)
                    bytes = Array(bytes.prefix(cut)) + Array(other[from...])
                }
            case 7:
                let count = 1 + below(16)
                let filler = (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) }
                bytes.insert(contentsOf: filler, at: below(bytes.count + 1))
            default:
                if !bytes.isEmpty { bytes[below(bytes.count)] = [0, 0xFF, 0x0A, 0x3A, 0x22, 0x5B][below(6)] }
            }
        }
        if bytes.count > maximumBytes { bytes = Array(bytes.prefix(maximumBytes)) }
        return bytes
    }

    /// Runs `count` mutated inputs through `check`, which returns normally when it accepts an
    /// input and throws when it refuses one. Each input is a mutation of a seed or of an earlier input.
    public mutating func campaign(
        _ name: String, seeds: [[UInt8]], count: Int, check: ([UInt8]) throws -> Void
    ) -> Report {
        var report = Report(name: name)
        var pool = seeds
        for i in 0..<count {
            let parent = pool[below(pool.count)]
            let input = i < seeds.count ? seeds[i] : mutate(parent, seeds: seeds)
            let started = DispatchTime.now().uptimeNanoseconds
            do {
                try check(input)
                report.accepted += 1
                if pool.count < 64 { pool.append(input) } else { pool[below(pool.count)] = input }
            } catch let e as MoireError where e.place != nil {
                report.refused += 1
            } catch {
                report.unplacedErrors += 1
                if report.unplacedExample == nil { report.unplacedExample = "\(error)" }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            report.slowestSeconds = max(report.slowestSeconds, seconds)
            if seconds > hangSeconds { report.hangs += 1 }
            report.inputs += 1
        }
        return report
    }
}
