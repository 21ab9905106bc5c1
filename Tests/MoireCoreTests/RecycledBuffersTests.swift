import Foundation
import MoireCore
import Testing

struct RecycledBuffersTests {
    struct Refused: Error {}

    /// A buffer comes back when the last Data over it is released (copies of the Data share it),
    /// is handed out again with what `fill` writes, and at most `kept` wait for reuse.
    @Test func aReleasedBufferIsHandedOutAgain() {
        let buffers = RecycledBuffers(byteCount: 4096, kept: 2)
        var first: Data? = buffers.data { bytes in bytes.initializeMemory(as: UInt8.self, repeating: 7) }
        let address = first!.withUnsafeBytes { $0.baseAddress }
        var copy: Data? = first
        first = nil
        #expect(buffers.freeCount == 0, "a copy still holds the buffer")
        #expect(copy!.allSatisfy { $0 == 7 })
        copy = nil
        #expect(buffers.freeCount == 1)
        let second = buffers.data { bytes in bytes.initializeMemory(as: UInt8.self, repeating: 9) }
        #expect(second.withUnsafeBytes { $0.baseAddress } == address, "the same memory again")
        #expect(second.count == 4096 && second.allSatisfy { $0 == 9 })
        #expect(buffers.freeCount == 0)

        var held: [Data] = (0..<4).map { index in
            buffers.data { bytes in bytes.initializeMemory(as: UInt8.self, repeating: UInt8(index)) }
        }
        #expect(Set(held.map { $0.withUnsafeBytes { $0.baseAddress } }).count == 4, "no buffer handed out twice")
        held.removeAll()
        #expect(buffers.freeCount == 2, "only `kept` are kept")
    }

    /// A fill that throws gives its buffer back and hands no Data out.
    @Test func aFailedFillGivesItsBufferBack() {
        let buffers = RecycledBuffers(byteCount: 64)
        #expect(throws: Refused.self) {
            _ = try buffers.data { _ in throw Refused() }
        }
        #expect(buffers.freeCount == 1)
    }
}
