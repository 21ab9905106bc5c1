// swift-tools-version: 6.1
// Performance benchmarks (ordo-one/benchmark): `cd Benchmarks && swift package benchmark`.
// Kept out of the main package so `make test` never builds them.
import Foundation
import PackageDescription

/// SwiftPM names a path dependency after its folder, which depends on where the repository was cloned.
let moire = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "MoireBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "TransportBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "MoirePipeline", package: moire),
            ],
            path: "Benchmarks/TransportBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
