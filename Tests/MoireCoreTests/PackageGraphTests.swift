import Foundation
import Testing

/// Package.swift is the true module graph: every target declares exactly the modules its sources
/// import, and each C library is imported by one Swift module (DESIGN.md's layering rule).
@Suite struct PackageGraphTests {
    /// Modules of the toolchain, which no target declares.
    static let toolchainModules: Set<String> = [
        "Foundation", "FoundationEssentials", "FoundationXML", "Glibc", "Musl", "Darwin", "Dispatch", "Synchronization", "Testing", "XCTest",
    ]

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    struct Manifest {
        var declared: [String: Set<String>] = [:]
        var systemLibraries: Set<String> = []
    }

    /// The targets of Package.swift and the modules each declares (products by their module name).
    static func manifest() throws -> Manifest {
        let text = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        var aliases: [String: String] = [:]
        let alias = try Regex(#"let (\w+): Target\.Dependency = \.product\(name: "(\w+)""#)
        for match in text.matches(of: alias) {
            aliases[String(match.output[1].substring!)] = String(match.output[2].substring!)
        }
        var manifest = Manifest()
        let system = try Regex(#"\.systemLibrary\(name: "(\w+)""#)
        for match in text.matches(of: system) { manifest.systemLibraries.insert(String(match.output[1].substring!)) }
        let target = try Regex(#"\.(?:target|executableTarget|testTarget)\(name: "(\w+)"(?:, dependencies: \[([^\]]*)\])?"#)
        let quoted = try Regex(#""(\w+)""#)
        let identifier = try Regex(#"^\s*(\w+)\s*$"#)
        for match in text.matches(of: target) {
            let name = String(match.output[1].substring!)
            var modules: Set<String> = []
            if let list = match.output[2].substring {
                for item in list.split(separator: ",") {
                    // `.product(name: "X", package: "y")` splits in two: its first half names the module.
                    if item.contains("package:") { continue }
                    if let q = item.firstMatch(of: quoted) {
                        modules.insert(String(q.output[1].substring!))
                    } else if let id = item.firstMatch(of: identifier) {
                        let variable = String(id.output[1].substring!)
                        modules.insert(aliases[variable] ?? variable)
                    }
                }
            }
            manifest.declared[name] = modules
        }
        return manifest
    }

    /// The modules the Swift files under `folder` import, the toolchain's left out.
    static func imports(under folder: URL) throws -> Set<String> {
        let statement = try Regex(#"^\s*(?:@\w+\s+)*import\s+(?:(?:struct|class|enum|func|var|let|protocol|typealias)\s+)?(\w+)"#)
        var modules: Set<String> = []
        let files = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: nil)
        while let file = files?.nextObject() as? URL {
            guard file.pathExtension == "swift" else { continue }
            for line in try String(contentsOf: file, encoding: .utf8).split(separator: "\n") {
                if let match = line.firstMatch(of: statement) { modules.insert(String(match.output[1].substring!)) }
            }
        }
        return modules.subtracting(toolchainModules)
    }

    static func folder(of target: String) -> URL {
        let tests = root.appendingPathComponent("Tests").appendingPathComponent(target)
        if FileManager.default.fileExists(atPath: tests.path) { return tests }
        return root.appendingPathComponent("Sources").appendingPathComponent(target)
    }

    @Test func everyTargetDeclaresExactlyWhatItImports() throws {
        let manifest = try Self.manifest()
        #expect(manifest.declared.count >= 20, "found \(manifest.declared.count) targets in Package.swift")
        for (target, declared) in manifest.declared.sorted(by: { $0.key < $1.key }) {
            let imported = try Self.imports(under: Self.folder(of: target))
            let undeclared = imported.subtracting(declared).sorted()
            let unused = declared.subtracting(imported).sorted()
            #expect(undeclared.isEmpty, "\(target) imports \(undeclared) without declaring them in Package.swift")
            #expect(unused.isEmpty, "\(target) declares \(unused) in Package.swift but never imports them")
        }
    }

    @Test func eachCLibraryIsImportedByOneSwiftModule() throws {
        let manifest = try Self.manifest()
        #expect(
            manifest.systemLibraries == [
                "CZMQ", "CFFTW", "CTIFF", "CUSB", "CDNNL", "CZlib", "CSodium", "CZstd", "CSharedMemory",
            ])
        let sources = manifest.declared.keys.filter {
            !FileManager.default.fileExists(atPath: Self.root.appendingPathComponent("Tests/\($0)").path)
        }
        for library in manifest.systemLibraries.sorted() {
            var importers: [String] = []
            for target in sources.sorted() {
                if try Self.imports(under: Self.folder(of: target)).contains(library) { importers.append(target) }
            }
            #expect(importers.count == 1, "\(library) is imported by \(importers)")
        }
    }

    @Test func theCheckSeesAMissingDeclaration() throws {
        // The checker itself: an import of a module no target declares is found.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("graph-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try "import Foundation\n@preconcurrency import MoireCore\nimport struct Yams.Node\n// import Nothing\n"
            .write(to: folder.appendingPathComponent("A.swift"), atomically: true, encoding: .utf8)
        #expect(try Self.imports(under: folder) == ["MoireCore", "Yams"])
    }
}
