import Foundation
import MoireCore
import MoireTesting
import Testing

@testable import MoireTransport

/// Workers on the broker's machine share a sealed memory file with it: jobs are written into it
/// and results read from it instead of crossing the socket.
@Suite(.serialized) struct SharedMemoryTests {
    let dir = NSTemporaryDirectory() + "moire-shm-\(getpid())"

    init() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    var timing: WorkTiming {
        var t = WorkTiming()
        t.heartbeatMs = 100
        t.livenessBeats = 5
        return t
    }

    /// For peers written out here, which send no heartbeats: alive for a minute of silence.
    var patient: WorkTiming {
        var t = WorkTiming()
        t.heartbeatMs = 100
        t.livenessBeats = 600
        return t
    }

    /// The allocator against a model of its blocks: every block is page-aligned, inside the range
    /// and overlaps no live one; an allocation fails only when no gap between live blocks is big
    /// enough; freeing everything gives the whole range back in one piece.
    @Test func pageAllocatorMatchesAModelOfItsBlocks() {
        let page = PageAllocator.pageBytes
        let range = (3 * page)..<(3 * page + 64 * page)
        var allocator = PageAllocator(range: range)
        var live: [Int: Int] = [:]
        var generator = SplitMix64(seed: 17)
        for _ in 0..<2000 {
            if live.isEmpty || Int.random(in: 0..<3, using: &generator) > 0 {
                let bytes = Int.random(in: 1...(12 * page), using: &generator)
                let pages = (bytes + page - 1) / page
                let sorted = live.sorted { $0.key < $1.key }
                var largestGap = 0
                var cursor = range.lowerBound
                for (offset, length) in sorted {
                    largestGap = max(largestGap, offset - cursor)
                    cursor = offset + length
                }
                largestGap = max(largestGap, range.upperBound - cursor)
                if let offset = allocator.allocate(bytes) {
                    #expect(offset % page == 0 && range.contains(offset) && offset + pages * page <= range.upperBound)
                    for (other, length) in live {
                        #expect(offset + pages * page <= other || other + length <= offset, "overlap")
                    }
                    live[offset] = pages * page
                } else {
                    #expect(largestGap < pages * page, "refused \(pages) pages with a gap of \(largestGap / page)")
                }
            } else {
                let offset = live.keys.randomElement(using: &generator)!
                let freed = allocator.free(offset)
                #expect(freed)
                live[offset] = nil
            }
            #expect(allocator.allocatedBytes == live.values.reduce(0, +))
        }
        let freedANonBlock = allocator.free(range.lowerBound + 1)
        #expect(!freedANonBlock)
        for offset in live.keys { allocator.free(offset) }
        let whole = allocator.allocate(range.count)
        #expect(whole == range.lowerBound)
    }

    /// A layout frame is refused when an entry is malformed, reaches outside the range it must
    /// stay in, or lists too many parts.
    @Test func malformedOrOutOfRangeLayoutsAreRefused() {
        let range = 4096..<(4096 + 1 << 20)
        #expect(
            PartPlacement.parse(layout: "-,8192+100,-", within: range) == [
                .inline, .shared(offset: 8192, length: 100), .inline,
            ])
        #expect(PartPlacement.layout([.inline, .shared(offset: 8192, length: 100)]) == "-,8192+100")
        #expect(PartPlacement.parse(layout: "", within: range) == [], "a result without parts")
        for bad in [
            "0+100", "4000+200", "\(range.upperBound - 10)+11", "8192+0", "8192+-5", "-8192+5", "8192", "8192+5+1",
            "x", ",", "9223372036854775807+9223372036854775807", Array(repeating: "-", count: 65).joined(separator: ","),
        ] {
            #expect(PartPlacement.parse(layout: bad, within: range) == nil, "accepted \(bad)")
        }
        #expect(PartPlacement.parse(offsets: "4096,8192") == [4096, 8192])
        #expect(PartPlacement.parse(offsets: "4096,x") == nil)
    }

    /// A worker's result block is freed only when both the worker has let go of it and the
    /// broker has handed it back; a FREE for a block not lent changes nothing.
    @Test func aResultBlockIsFreedWhenBothSidesAreDone() throws {
        let space = try WorkerSharedSpace(byteCount: SharedFileLayout.minimumBytes)
        var result: Data? = try #require(
            space.resultData(byteCount: 100_000) { bytes in
                for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index) }
            })
        let placement = space.place(result!)
        guard case .shared(let offset, let length) = placement else {
            Issue.record("a 100 kB result in shared memory was not placed there: \(placement)")
            return
        }
        #expect(length == 100_000 && space.layout.results.contains(offset))
        #expect(
            (0..<100_000).allSatisfy {
                space.file.base.load(fromByteOffset: offset + $0, as: UInt8.self) == UInt8(truncatingIfNeeded: $0)
            })
        space.brokerFreed(offset + 4096)
        result = nil
        #expect(space.resultBytesInUse > 0, "freed while the broker still reads it")
        space.brokerFreed(offset)
        #expect(space.resultBytesInUse == 0)
        space.brokerFreed(offset)
        #expect(space.resultBytesInUse == 0)
        // A result made elsewhere is copied in; a small one stays in the message.
        let heap = Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        guard case .shared(let copied, _) = space.place(heap) else {
            Issue.record("a 70 kB result was not copied into shared memory")
            return
        }
        #expect(Data(bytes: space.file.base + copied, count: heap.count) == heap)
        #expect(space.place(Data(count: 1000)) == .inline)
    }

    /// Jobs and results of a megabyte between a broker and a worker over ipc: every job goes
    /// through the worker's shared memory, every result comes back whole and in order, and once
    /// the results are released every block on both sides is free again (so the next sets reuse them).
    @Test func largeJobsAndResultsGoThroughSharedMemoryAndComeBackWhole() throws {
        let broker = try WorkBroker(endpoint: "ipc://\(dir)/shm.sock", timing: timing) { $0 }
        defer { broker.stop() }
        let memory = WorkResultMemory()
        let worker = try WorkWorker(endpoint: broker.endpoint, name: "near", timing: timing, resultMemory: memory) {
            item in
            // The payload reversed, written straight into the shared memory, and a small tag.
            let payload = item.parts[1]
            let reversed = try #require(
                memory.data(byteCount: payload.count) { bytes in
                    payload.withUnsafeBytes { source in
                        for index in 0..<source.count { bytes[index] = source[source.count - 1 - index] }
                    }
                })
            return WorkItem(sequence: item.sequence, parts: [item.parts[0], reversed])
        }
        try worker.start()
        defer { worker.stop() }
        let deadline = Date().addingTimeInterval(60)
        while broker.liveWorkers < 1, Date() < deadline { usleep(10_000) }
        var generator = SplitMix64(seed: 5)
        let payloads = (0..<24).map { _ in
            Data((0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
        for (sequence, payload) in payloads.enumerated() {
            broker.submit(WorkItem(sequence: sequence, parts: [Data("set \(sequence)".utf8), payload]))
        }
        for (sequence, payload) in payloads.enumerated() {
            let result = try #require(broker.nextResult(timeoutMs: 60_000), "result \(sequence) never came")
            #expect(result.sequence == sequence && result.parts.count == 2)
            #expect(result.parts[0] == Data("set \(sequence)".utf8))
            #expect(result.parts[1] == Data(payload.reversed()), "result \(sequence) differs")
        }
        #expect(broker.counts.sharedMemoryJobs == 24, "\(broker.counts)")
        // Every block handed back: the results are released, the jobs were let go of.
        while (worker.sharedMemoryInUse > 0 || broker.sharedMemoryInUse > 0), Date() < deadline { usleep(10_000) }
        #expect(worker.sharedMemoryInUse == 0 && broker.sharedMemoryInUse == 0)
    }

    /// Offers of memory that is not the offering worker's are refused (the broker then sends the
    /// worker's jobs in the message): an ordinary file, a memory file whose token differs, a size
    /// that is not the file's. The real offer is taken.
    @Test func anOfferThatIsNotAWorkersMemoryIsRefused() throws {
        let space = try WorkerSharedSpace(byteCount: SharedFileLayout.minimumBytes)
        let plainPath = dir + "/plain"
        FileManager.default.createFile(atPath: plainPath, contents: Data(count: SharedFileLayout.minimumBytes))
        let plain = open(plainPath, O_RDWR)
        defer { close(plain) }
        let pid = String(getpid())
        let size = String(space.file.byteCount)
        let offers: [(String, [ZMQPart], Bool)] = [
            (
                "a plain file",
                [.text("memfd"), .text(pid), .text(String(plain)), .text(size), .bytes(space.file.token)], false
            ),
            (
                "another token",
                [
                    .text("memfd"), .text(pid), .text(String(space.file.descriptor)), .text(size),
                    .bytes(Data(count: 16)),
                ], false
            ),
            (
                "another size",
                [
                    .text("memfd"), .text(pid), .text(String(space.file.descriptor)),
                    .text(String(2 * space.file.byteCount)), .bytes(space.file.token),
                ], false
            ),
            (
                "the worker's memory",
                [
                    .text("memfd"), .text(pid), .text(String(space.file.descriptor)), .text(size),
                    .bytes(space.file.token),
                ], true
            ),
        ]
        for (index, (what, offer, taken)) in offers.enumerated() {
            // A broker for each peer, which sends no heartbeats: it stays alive for a minute.
            let broker = try WorkBroker(endpoint: "ipc://\(dir)/offers\(index).sock", timing: patient) { $0 }
            defer { broker.stop() }
            let sequence = 0
            let peer = try ZMQSocket(.shared, type: .dealer)
            try peer.setReceiveTimeout(ms: 30_000)
            try peer.connect(broker.endpoint)
            try peer.send([.text("READY"), .text("peer\(index)")] + offer)
            // Without a live worker the broker would run the job in process.
            let deadline = Date().addingTimeInterval(30)
            while broker.liveWorkers < 1, Date() < deadline { usleep(5000) }
            broker.submit(WorkItem(sequence: sequence, parts: [Data(count: 100_000)]))
            var commands: [String] = []
            while !commands.contains(where: { $0.hasPrefix("JOB") }) {
                guard let message = try? peer.receive() else {
                    Issue.record("\(what): no job within 30 s, only \(commands)")
                    return
                }
                if message[0].string != "HEARTBEAT" { commands.append(message[0].string) }
                if message[0].string.hasPrefix("JOB") {
                    // Answer in the message, then leave: the next peer gets the next job.
                    try peer.send([.text("RESULT"), .text(message[1].string)])
                }
            }
            #expect(commands.contains("SHARED") == taken, "\(what): \(commands)")
            #expect(commands.contains("JOBREF") == taken, "\(what): \(commands)")
            _ = try #require(broker.nextResult(timeoutMs: 30_000), "\(what): no result")
        }
    }

    /// A worker whose RESULTREF points outside its results' range fails that set only: the result
    /// is empty, the failure counted, and its next set, answered properly, comes back.
    @Test func aResultOutsideTheWorkersMemoryFailsThatSetOnly() throws {
        let broker = try WorkBroker(endpoint: "ipc://\(dir)/bad.sock", timing: patient) { $0 }
        defer { broker.stop() }
        let space = try WorkerSharedSpace(byteCount: SharedFileLayout.minimumBytes)
        let peer = try ZMQSocket(.shared, type: .dealer)
        try peer.setReceiveTimeout(ms: 30_000)
        try peer.connect(broker.endpoint)
        try peer.send([
            .text("READY"), .text("liar"), .text("memfd"), .text(String(getpid())),
            .text(String(space.file.descriptor)),
            .text(String(space.file.byteCount)), .bytes(space.file.token),
        ])
        let deadline = Date().addingTimeInterval(30)
        while broker.liveWorkers < 1, Date() < deadline { usleep(5000) }
        broker.submit(WorkItem(sequence: 0, parts: [Data(count: 100_000)]))
        broker.submit(WorkItem(sequence: 1, parts: [Data(count: 100_000)]))
        var answered = 0
        while answered < 2 {
            let message = try peer.receive()
            guard message[0].string == "JOBREF" else { continue }
            let sequence = message[1].string
            if sequence == "0" {
                // Its header page and then some of the jobs' range: not the results'.
                try peer.send([.text("RESULTREF"), .text(sequence), .text("0+\(space.layout.jobs.upperBound)")])
            } else {
                try peer.send([.text("RESULTREF"), .text(sequence), .text("-"), .bytes(Data("fine".utf8))])
            }
            answered += 1
        }
        let failed = try #require(broker.nextResult(timeoutMs: 30_000))
        #expect(failed.sequence == 0 && failed.parts.isEmpty)
        let fine = try #require(broker.nextResult(timeoutMs: 30_000))
        #expect(fine.sequence == 1 && fine.parts == [Data("fine".utf8)])
        #expect(broker.counts.failures == 1, "\(broker.counts)")
    }
}
