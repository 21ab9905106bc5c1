import CSodium

/// SHA-256 (FIPS 180-4, libsodium's `crypto_hash_sha256`), for checking that a device's description
/// file is the one a profile was made from.
public enum SHA256 {
    /// libsodium is made ready once, before its first use (its functions are thread-safe after).
    private static let ready: Bool = sodium_init() >= 0

    /// The digest of `bytes`.
    public static func hash<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        precondition(ready, "libsodium could not be initialised")
        let message = Array(bytes)
        var digest = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_BYTES))
        message.withUnsafeBufferPointer { input in
            _ = crypto_hash_sha256(&digest, input.baseAddress, UInt64(input.count))
        }
        return digest
    }

    /// The digest of `bytes` as lowercase hexadecimal.
    public static func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        hash(bytes).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
