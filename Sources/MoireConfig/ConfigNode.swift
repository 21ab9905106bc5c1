import Foundation
import MoireCore
import Yams

/// A YAML node with its file and key path, that reads typed fields and reports errors at their place.
///
/// Every reader of a mapping records the keys it consumed; `finish()` rejects any key nobody
/// asked for, so a misspelt field is an error, not a silently ignored line.
public final class ConfigNode {
    /// Yams' tag resolver shares regular expressions that are not safe to use from several threads
    /// at once: every load of a configuration file runs under this (recursive) lock.
    static let parsing = NSRecursiveLock()

    /// Runs `body` holding the configuration-parsing lock.
    public static func withParsingLock<R>(_ body: () throws -> R) rethrows -> R {
        parsing.lock(); defer { parsing.unlock() }
        return try body()
    }

    public let node: Node
    public let file: String
    /// Dotted key path, e.g. `channels[0].exposure_ms`.
    public let path: String
    private var consumed: Set<String> = []

    public init(node: Node, file: String, path: String) {
        self.node = node
        self.file = file
        self.path = path
    }

    /// The largest protocol, rig or profile file read (real ones are a few kilobytes).
    public static let maximumFileBytes: UInt64 = 1 << 20

    /// Parses a YAML file; syntax errors carry file:line:column. Only regular files up to
    /// `maximumFileBytes` of UTF-8 text are read.
    public static func load(file: String) throws -> ConfigNode {
        let size = try InputFile.size(file)
        guard size <= maximumFileBytes else {
            throw MoireError(
                .config, "file is \(size) bytes; configuration files are limited to \(maximumFileBytes) bytes",
                place: file)
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw MoireError(.io, "cannot read file", place: file)
        }
        return try parse(try utf8Text(data, file: file), file: file)
    }

    /// `data` as UTF-8 text, or an error at the first byte that is not UTF-8.
    static func utf8Text(_ data: Data, file: String) throws -> String {
        let bytes = [UInt8](data)
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        var offset = 0
        var line = 1
        var lineStart = 0
        while offset < bytes.count {
            let length = utf8SequenceLength(bytes, at: offset)
            if length == 0 { break }
            if bytes[offset] == 0x0A {
                line += 1
                lineStart = offset + 1
            }
            offset += length
        }
        let column = offset - lineStart + 1
        let byte = offset < bytes.count ? String(format: "0x%02X", bytes[offset]) : "end of file"
        throw MoireError(.config, "not UTF-8 text: byte \(byte) is not valid UTF-8", place: "\(file):\(line):\(column)")
    }

    /// The length of the valid UTF-8 sequence at `offset`, or 0 when the bytes there are not one.
    private static func utf8SequenceLength(_ bytes: [UInt8], at offset: Int) -> Int {
        let lead = bytes[offset]
        let length: Int
        switch lead {
        case 0x00...0x7F: return 1
        case 0xC2...0xDF: length = 2
        case 0xE0...0xEF: length = 3
        case 0xF0...0xF4: length = 4
        default: return 0
        }
        guard offset + length <= bytes.count else { return 0 }
        let sequence = Array(bytes[offset..<(offset + length)])
        return String(validating: sequence, as: UTF8.self) == nil ? 0 : length
    }

    /// At most `limit` characters of `text` (one line), for quoting in an error message.
    public static func excerpt(_ text: String, limit: Int = 60) -> String {
        let firstLine = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard firstLine.count > limit || firstLine.count < text.count else { return firstLine }
        return String(firstLine.prefix(limit)) + "…"
    }

    /// Parses YAML text that came from `file` (used for messages only).
    public static func parse(_ text: String, file: String) throws -> ConfigNode {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let YamlError.duplicatedKeysInMapping(duplicates, context) {
            throw duplicateKeyError(duplicates, mappingMark: context.mark, text: text, file: file)
        } catch let error as YamlError {
            throw syntaxError(error, file: file)
        } catch {
            throw MoireError(.config, "YAML error: \(error)", place: file)
        }
        guard let node else {
            throw MoireError(.config, "file is empty; expected a YAML mapping", place: "\(file):1:1")
        }
        return ConfigNode(node: node, file: file, path: "")
    }

    private static func syntaxError(_ error: YamlError, file: String) -> MoireError {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
            let .composer(context, problem, mark, _):
            let ctx = context.map { " (\(excerpt($0.text)))" } ?? ""
            return MoireError(
                .config, "YAML syntax error: \(problem)\(ctx)", place: "\(file):\(mark.line):\(mark.column)")
        case let .reader(problem, _, _, _):
            return MoireError(.config, "YAML error: \(excerpt(problem))", place: file)
        default:
            return MoireError(.config, "YAML error: \(excerpt("\(error)"))", place: file)
        }
    }

    /// A duplicated key, at the line of its second occurrence in the mapping that starts at
    /// `mappingMark` (Yams names the keys and the mapping, not the lines).
    private static func duplicateKeyError(_ keys: [String], mappingMark: Mark, text: String, file: String)
        -> MoireError
    {
        let key = keys.sorted().first ?? ""
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var found: [Int] = []
        // Yams counts lines its own way (\r, U+2028 …): its mark may lie past the lines split here.
        let firstLine = min(max(0, mappingMark.line - 1), lines.count)
        for index in firstLine..<lines.count {
            let line = lines[index]
            let indentation = line.prefix { $0 == " " || $0 == "-" }
            let rest = line.dropFirst(indentation.count)
            // Block mappings: the key starts at the mapping's own column.
            guard indentation.count + 1 == mappingMark.column else { continue }
            for quote in ["", "\"", "'"] where rest.hasPrefix("\(quote)\(key)\(quote)") {
                let after = rest.dropFirst(key.count + 2 * quote.count)
                if after.drop(while: { $0 == " " }).hasPrefix(":") { found.append(index + 1) }
            }
        }
        let named = keys.sorted().map { "'\(excerpt($0))'" }.joined(separator: ", ")
        guard found.count >= 2 else {
            return MoireError(
                .config, "duplicate key \(named) in this mapping",
                place: "\(file):\(mappingMark.line):\(mappingMark.column)")
        }
        return MoireError(
            .config, "duplicate key \(named); first given at line \(found[0])",
            place: "\(file):\(found[1]):\(mappingMark.column)")
    }

    /// file:line:column of this node.
    public var place: String {
        if let mark = node.mark { return "\(file):\(mark.line):\(mark.column)" }
        return file
    }

    /// An error at this node naming its field.
    public func error(_ message: String) -> MoireError {
        MoireError(.config, path.isEmpty ? message : "\(path): \(message)", place: place)
    }

    // MARK: mapping access

    private func mapping() throws -> Node.Mapping {
        guard case let .mapping(m) = node else { throw error("expected a mapping of fields, found \(kindName)") }
        for (key, _) in m {
            guard case .scalar = key else {
                let keyNode = ConfigNode(node: key, file: file, path: path)
                throw keyNode.error("a field name must be text, found \(keyNode.kindName) as a key")
            }
        }
        return m
    }

    private var kindName: String {
        switch node {
        case .scalar(let s): return s.string.isEmpty ? "an empty value" : "the scalar '\(Self.excerpt(s.string))'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The child for `key`, or nil when absent (or explicitly null).
    public func child(_ key: String) throws -> ConfigNode? {
        let m = try mapping()
        consumed.insert(key)
        guard let value = m[key] else { return nil }
        if case let .scalar(s) = value, s.style == .plain, ["", "~", "null", "Null", "NULL"].contains(s.string) {
            return nil
        }
        return ConfigNode(node: value, file: file, path: childPath(key))
    }

    /// The child for `key`; an error naming the field when it is missing.
    public func required(_ key: String) throws -> ConfigNode {
        guard let c = try child(key) else {
            throw MoireError(.config, "missing required field '\(childPath(key))'", place: place)
        }
        return c
    }

    /// Keys of this mapping, in file order.
    public func keys() throws -> [String] {
        try mapping().keys.compactMap { $0.string }
    }

    /// Rejects keys that were never read. Call after reading every known field.
    public func finish() throws {
        let m = try mapping()
        for (key, _) in m {
            guard let name = key.string else { continue }
            if !consumed.contains(name) {
                let known = consumed.sorted().joined(separator: ", ")
                let keyNode = ConfigNode(node: key, file: file, path: childPath(name))
                throw keyNode.error("unknown field '\(name)'; expected one of: \(known)")
            }
        }
    }

    /// The elements of a list.
    public func list() throws -> [ConfigNode] {
        guard case let .sequence(s) = node else { throw error("expected a list, found \(kindName)") }
        return s.enumerated().map { ConfigNode(node: $1, file: file, path: "\(path)[\($0)]") }
    }

    // MARK: scalars

    public func string() throws -> String {
        guard case let .scalar(s) = node else { throw error("expected text, found \(kindName)") }
        return s.string
    }

    public func double() throws -> Double {
        guard case .scalar = node, let v = node.float ?? node.int.map(Double.init), v.isFinite else {
            throw error("expected a number, found \(kindName)")
        }
        return v
    }

    public func int() throws -> Int {
        guard case .scalar = node, let v = node.int else { throw error("expected a whole number, found \(kindName)") }
        return v
    }

    public func bool() throws -> Bool {
        guard case .scalar = node, let v = node.bool else { throw error("expected true or false, found \(kindName)") }
        return v
    }

    /// A number checked against a closed range, with the unit in the message.
    public func double(in range: ClosedRange<Double>, unit: String = "") throws -> Double {
        let v = try double()
        guard range.contains(v) else {
            throw error(
                "value \(fmt(v))\(unit) is out of range; expected \(fmt(range.lowerBound))…\(fmt(range.upperBound))\(unit)"
            )
        }
        return v
    }

    public func int(in range: ClosedRange<Int>) throws -> Int {
        let v = try int()
        guard range.contains(v) else {
            throw error("value \(v) is out of range; expected \(range.lowerBound)…\(range.upperBound)")
        }
        return v
    }

    /// One of a fixed set of words.
    public func choice<E: RawRepresentable & CaseIterable>(_ type: E.Type) throws -> E where E.RawValue == String {
        let s = try string()
        guard let v = E(rawValue: s) else {
            throw error("unknown value '\(s)'; expected one of: \(E.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return v
    }

    public func doubles(count: Int? = nil) throws -> [Double] {
        let items = try list()
        if let count, items.count != count { throw error("expected a list of \(count) numbers, found \(items.count)") }
        return try items.map { try $0.double() }
    }

    public func ints(count: Int? = nil) throws -> [Int] {
        let items = try list()
        if let count, items.count != count {
            throw error("expected a list of \(count) whole numbers, found \(items.count)")
        }
        return try items.map { try $0.int() }
    }

    public func strings() throws -> [String] { try list().map { try $0.string() } }

    /// A flat mapping of scalars as text (free-form option blocks passed to later stages).
    public func stringMap() throws -> [String: String] {
        var out: [String: String] = [:]
        for key in try keys() {
            guard let c = try child(key) else { continue }
            out[key] = try c.string()
        }
        return out
    }

    /// Resolves a path written in this file relative to the file's folder.
    public func resolvePath(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        let dir = (file as NSString).deletingLastPathComponent
        return ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(p)
    }
}

func fmt(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e12 ? String(Int(v)) : String(v)
}

extension ConfigNode {
    /// Optional field helpers.
    public func optionalDouble(_ key: String, in range: ClosedRange<Double>, unit: String = "") throws -> Double? {
        try child(key)?.double(in: range, unit: unit)
    }
    public func optionalInt(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        try child(key)?.int(in: range)
    }
    public func optionalString(_ key: String) throws -> String? { try child(key)?.string() }
    /// `auto`, or a number within `range` (as text either way).
    public func optionalAutoOrDouble(_ key: String, in range: ClosedRange<Double>) throws -> String? {
        guard let node = try child(key) else { return nil }
        if try node.string() == "auto" { return "auto" }
        return String(try node.double(in: range))
    }
    public func optionalBool(_ key: String) throws -> Bool? { try child(key)?.bool() }

    /// Checks the `moire: 1` version field.
    public func checkVersion() throws {
        let v = try required("moire")
        let n = try v.int()
        guard n == 1 else { throw v.error("unsupported format version \(n); this Moiré reads version 1") }
    }
}
