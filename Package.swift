// swift-tools-version: 6.0
import PackageDescription

// Each target declares exactly the modules its sources import (PackageGraphTests keeps it so).
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let deque: Target.Dependency = .product(name: "DequeModule", package: "swift-collections")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let serviceLifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")

let package = Package(
    name: "Moire",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "moire", targets: ["moire"]),
        .executable(name: "moired", targets: ["moired"]),
        .library(name: "MoirePipeline", targets: ["MoirePipeline"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        // System libraries: module map + shim, nothing else. Each is imported by one Swift module.
        .systemLibrary(name: "CZMQ", pkgConfig: "libzmq"),
        .systemLibrary(name: "CFFTW", pkgConfig: "fftw3f"),
        .systemLibrary(name: "CTIFF", pkgConfig: "libtiff-4"),
        .systemLibrary(name: "CUSB", pkgConfig: "libusb-1.0"),
        .systemLibrary(name: "CDNNL"),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib"),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium"),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        // Linux sealed memory files (libc's, which Swift's Glibc module does not show).
        .systemLibrary(name: "CSharedMemory"),

        .target(name: "MoireCore", dependencies: ["CSodium"]),
        .target(name: "MoireConfig", dependencies: ["MoireCore", "Yams"]),
        .target(name: "MoireTransport", dependencies: ["MoireConfig", "MoireCore", "CSharedMemory", "CZMQ"]),
        .target(name: "MoireStorage", dependencies: ["MoireCore", "CTIFF", "CZlib", "CZstd", logging]),
        .target(name: "MoireFFT", dependencies: ["MoireCore", "CFFTW"]),
        .target(name: "MoireHardware", dependencies: ["MoireConfig", "MoireCore", "CUSB", deque]),
        // The simulated rig (physics, specimens, byte-level peers, replay) and the factory that builds a rig's devices.
        .target(name: "MoireSimulation", dependencies: [
            "MoireConfig", "MoireCore", "MoireFFT", "MoireHardware", "MoireStorage", deque,
        ]),
        .target(name: "MoireAcquisition", dependencies: ["MoireConfig", "MoireCore", "MoireHardware", logging]),
        .target(name: "MoireReconstruction", dependencies: ["MoireConfig", "MoireCore", "MoireFFT", "MoireStorage"]),
        // The denoiser's Winograd convolution for AVX2 machines: C with AVX2/FMA intrinsics, on libgomp's threads (oneDNN's pool).
        .target(name: "CWinograd", linkerSettings: [.linkedLibrary("gomp")]),
        .target(name: "MoireDenoise", dependencies: ["MoireConfig", "MoireCore", "CDNNL", "CWinograd"]),
        .target(name: "MoirePipeline", dependencies: [
            "MoireAcquisition", "MoireConfig", "MoireCore", "MoireDenoise", "MoireFFT", "MoireHardware",
            "MoireReconstruction", "MoireSimulation", "MoireStorage", "MoireTransport", logging, metrics,
        ]),
        // The benchmarks behind `moire bench`: linked by the command line tool only, never by the daemon.
        .target(name: "MoireBench", dependencies: [
            "MoireAcquisition", "MoireConfig", "MoireCore", "MoireDenoise", "MoireFFT", "MoireHardware",
            "MoirePipeline", "MoireReconstruction", "MoireSimulation", "MoireTransport",
        ]),
        .target(name: "MoireTesting", dependencies: [
            "MoireAcquisition", "MoireConfig", "MoireCore", "MoireHardware", "MoireSimulation", "MoirePipeline",
        ]),
        .executableTarget(name: "moire", dependencies: [
            "MoireAcquisition", "MoireBench", "MoireConfig", "MoireCore", "MoireDenoise", "MoireHardware", "MoirePipeline",
            "MoireReconstruction", "MoireStorage", "MoireTransport", argumentParser, logging,
        ]),
        .executableTarget(name: "moired", dependencies: [
            "MoireAcquisition", "MoireConfig", "MoireCore", "MoirePipeline", "MoireTransport",
            argumentParser, logging, metrics, prometheus, serviceLifecycle,
        ]),

        .testTarget(name: "MoireCoreTests", dependencies: ["MoireCore"]),
        .testTarget(name: "MoireConfigTests", dependencies: ["MoireConfig", "MoireCore", "MoireTesting"]),
        .testTarget(name: "MoireTransportTests", dependencies: ["MoireCore", "MoireTesting", "MoireTransport"]),
        .testTarget(name: "MoireStorageTests", dependencies: ["MoireCore", "MoireStorage", "MoireTesting"]),
        .testTarget(name: "MoireFFTTests", dependencies: ["MoireFFT"]),
        .testTarget(name: "MoireHardwareTests", dependencies: [
            "MoireConfig", "MoireCore", "MoireHardware", "MoireSimulation", "MoireStorage", "MoireTesting",
        ]),
        .testTarget(name: "MoireAcquisitionTests", dependencies: [
            "MoireAcquisition", "MoireConfig", "MoireCore", "MoireHardware", "MoireSimulation", "MoireTesting", logging,
        ]),
        .testTarget(name: "MoireDenoiseTests", dependencies: ["MoireConfig", "MoireCore", "MoireDenoise", "MoireTesting"]),
        .testTarget(name: "MoireReconstructionTests", dependencies: [
            "MoireConfig", "MoireCore", "MoireFFT", "MoireHardware", "MoireReconstruction", "MoireSimulation", "MoireStorage",
            "MoireTesting",
        ]),
        .testTarget(name: "MoirePipelineTests", dependencies: [
            "MoireAcquisition", "MoireConfig", "MoireCore", "MoireDenoise", "MoireHardware", "MoirePipeline",
            "MoireReconstruction", "MoireSimulation", "MoireStorage", "MoireTesting", "MoireTransport", logging,
        ]),
    ]
)
