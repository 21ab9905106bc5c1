// swift-tools-version: 6.0
import PackageDescription

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
    ],
    targets: [
        // System libraries: module map + shim, nothing else. Each is imported by one Swift module.
        .systemLibrary(name: "CZMQ", pkgConfig: "libzmq"),
        .systemLibrary(name: "CFFTW", pkgConfig: "fftw3f"),
        .systemLibrary(name: "CTIFF", pkgConfig: "libtiff-4"),
        .systemLibrary(name: "CUSB", pkgConfig: "libusb-1.0"),
        .systemLibrary(name: "CDNNL"),

        .target(name: "MoireCore", dependencies: [.product(name: "Logging", package: "swift-log")]),
        .target(name: "MoireConfig", dependencies: ["MoireCore", "Yams"]),
        .target(name: "MoireTransport", dependencies: ["MoireConfig", "CZMQ", .product(name: "Logging", package: "swift-log")]),
        .target(name: "MoireStorage", dependencies: ["MoireConfig", "CTIFF", .product(name: "Logging", package: "swift-log")]),
        .target(name: "MoireFFT", dependencies: ["MoireConfig", "CFFTW"]),
        .target(name: "MoireHardware", dependencies: ["MoireConfig", "MoireFFT", "MoireStorage", "CUSB", .product(name: "Logging", package: "swift-log")]),
        .target(name: "MoireAcquisition", dependencies: ["MoireHardware", .product(name: "Logging", package: "swift-log")]),
        .target(name: "MoireReconstruction", dependencies: ["MoireAcquisition", "MoireFFT"]),
        .target(name: "MoireDenoise", dependencies: ["MoireAcquisition", "CDNNL"]),
        .target(name: "MoirePipeline", dependencies: [
            "MoireAcquisition", "MoireTransport", "MoireStorage", "MoireReconstruction", "MoireDenoise",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        .target(name: "MoireTesting", dependencies: ["MoirePipeline"]),
        .executableTarget(name: "moire", dependencies: [
            "MoirePipeline", "MoireDenoise",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "moired", dependencies: [
            "MoirePipeline",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        .testTarget(name: "MoireCoreTests", dependencies: ["MoireCore"]),
        .testTarget(name: "MoireConfigTests", dependencies: ["MoireConfig", "MoireTesting"]),
        .testTarget(name: "MoireTransportTests", dependencies: ["MoireTransport", "MoireTesting"]),
        .testTarget(name: "MoireStorageTests", dependencies: ["MoireStorage", "MoireTesting"]),
        .testTarget(name: "MoireFFTTests", dependencies: ["MoireFFT"]),
        .testTarget(name: "MoireHardwareTests", dependencies: ["MoireHardware", "MoireStorage", "MoireTesting"]),
        .testTarget(name: "MoireAcquisitionTests", dependencies: ["MoireAcquisition", "MoireTesting"]),
        .testTarget(name: "MoireDenoiseTests", dependencies: ["MoireDenoise", "MoireTesting"]),
        .testTarget(name: "MoireReconstructionTests", dependencies: ["MoireReconstruction", "MoireTesting"]),
        .testTarget(name: "MoirePipelineTests", dependencies: ["MoirePipeline", "MoireDenoise", "MoireTesting"]),
    ]
)
