import Foundation
import MoireCore
import Testing

@Suite struct FramePoolTests {
    @Test func slotReturnsToPoolOnlyAfterEveryReferenceIsReleased() throws {
        let pool = FramePool(slots: 2, bytes: 100)
        let a = try #require(pool.acquire())
        #expect(pool.freeCount == 1)
        a.retain(count: 2)
        a.release(); a.release()
        #expect(pool.freeCount == 1)
        a.release()
        #expect(pool.freeCount == 2)
    }

    @Test func exhaustedPoolReturnsNilAndCountsIt() {
        let pool = FramePool(slots: 1, bytes: 8)
        let s = pool.acquire()
        #expect(s != nil)
        #expect(pool.acquire() == nil)
        #expect(pool.exhaustedCount == 1)
        s?.release()
        #expect(pool.acquire() != nil)
    }

    @Test func slotsAreAlignedAndDistinct() throws {
        let pool = FramePool(slots: 3, bytes: 70)
        let a = try #require(pool.acquire()), b = try #require(pool.acquire())
        #expect(Int(bitPattern: pool.address(of: a.index)) % 64 == 0)
        #expect(pool.address(of: a.index) != pool.address(of: b.index))
        a.withBytes { $0.storeBytes(of: UInt8(7), toByteOffset: 0, as: UInt8.self) }
        b.withBytes { $0.storeBytes(of: UInt8(9), toByteOffset: 0, as: UInt8.self) }
        #expect(a.withBytes { $0[0] } == 7)
    }

    @Test func headerRoundTripsThroughJSON() throws {
        let h = FrameHeader(run: "r", seq: 5, index: 5, t: 1, channel: "gfp", c: 0, angle: 1, phase: 2, z: 0, width: 4, height: 3,
                            pixelSizeUm: 0.065, missing: true, state: DeviceState(pattern: 4, lasers: ["l488"], zUm: 1, exposureMs: 5))
        let back = try JSONDecoder().decode(FrameHeader.self, from: JSONEncoder().encode(h))
        #expect(back == h)
        #expect(h.byteCount == 24)
    }

    @Test func virtualClockAdvancesOnlyBySleeping() {
        let c = VirtualClock()
        #expect(c.nowNs() == 0)
        c.sleep(ns: 5_000_000)
        #expect(c.nowNs() == 5_000_000)
        c.sleep(untilNs: 1)
        #expect(c.nowNs() == 5_000_000)
    }
}

@Suite struct SHA256Tests {
    @Test func knownDigests() {
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // 1 000 000 × 'a' (FIPS 180-2 appendix B.3): many blocks.
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
