import CSharedMemory
import Foundation
import MoireCore

/// A sealed Linux memory file (memfd) mapped into this process: the memory a worker shares with a
/// broker on the same machine, so that jobs and results of megabytes do not cross a socket.
///
/// The worker makes it and keeps its descriptor open; the broker opens it through
/// `/proc/<pid>/fd/<fd>` and maps it too. Its size is sealed, so neither side can shrink it under
/// the other's mapping (pages beyond the end would fault with SIGBUS). Pages are taken when first
/// written: a large file costs only the memory its jobs and results use. The file goes when the
/// last process closes and unmaps it, so a killed worker or broker leaves nothing behind.
final class SharedMemoryFile: @unchecked Sendable {  // immutable after init; the memory is the users' to guard
    let base: UnsafeMutableRawPointer
    let byteCount: Int
    let descriptor: Int32
    /// The worker writes a random token here; the broker checks it to know it mapped the file offered.
    static let tokenBytes = 16
    /// The name every Moiré memory file has (in `/proc/<pid>/fd/<fd>`'s link: `/memfd:NAME`).
    static let name = "moire-work"

    /// A new file of `byteCount` bytes, its size sealed, beginning with a random token.
    init(creating byteCount: Int) throws {
        let descriptor = moire_memfd_create(Self.name)
        guard descriptor >= 0 else {
            throw MoireError(.transport, "cannot make shared memory: \(String(cString: strerror(errno)))")
        }
        guard ftruncate(descriptor, off_t(byteCount)) == 0, moire_seal_size(descriptor) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw MoireError(.transport, "cannot size shared memory of \(byteCount) bytes: \(reason)")
        }
        base = try Self.map(descriptor, byteCount: byteCount)
        self.byteCount = byteCount
        self.descriptor = descriptor
        var generator = SystemRandomNumberGenerator()
        for index in 0..<Self.tokenBytes {
            base.storeBytes(of: UInt8.random(in: 0...255, using: &generator), toByteOffset: index, as: UInt8.self)
        }
    }

    /// The memory file `pid` holds open as `fd`, which must be a Moiré memory file of exactly
    /// `byteCount` bytes with its size sealed and `token` at its start.
    init(openingFileOf pid: Int32, descriptor fd: Int32, byteCount: Int, token: Data) throws {
        let path = "/proc/\(pid)/fd/\(fd)"
        var link = [CChar](repeating: 0, count: 256)
        let linkLength = readlink(path, &link, link.count - 1)
        let target = String(decoding: link.prefix(max(0, linkLength)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard target.hasPrefix("/memfd:\(Self.name)") else {
            throw MoireError(.transport, "\(path) is not a worker's shared memory", place: path)
        }
        let descriptor = open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw MoireError(.transport, "cannot open \(path): \(String(cString: strerror(errno)))", place: path)
        }
        var status = stat()
        guard moire_size_is_sealed(descriptor) == 1, fstat(descriptor, &status) == 0, Int(status.st_size) == byteCount
        else {
            close(descriptor)
            throw MoireError(.transport, "\(path) is not a sealed memory file of \(byteCount) bytes", place: path)
        }
        do {
            base = try Self.map(descriptor, byteCount: byteCount)
        } catch {
            close(descriptor)
            throw error
        }
        self.byteCount = byteCount
        self.descriptor = descriptor
        guard token.count == Self.tokenBytes, self.token == token else {
            throw MoireError(.transport, "\(path) does not hold the token its worker gave", place: path)
        }
    }

    deinit {
        munmap(base, byteCount)
        close(descriptor)
    }

    /// The token at the file's start.
    var token: Data { Data(bytes: base, count: Self.tokenBytes) }

    private static func map(_ descriptor: Int32, byteCount: Int) throws -> UnsafeMutableRawPointer {
        let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw MoireError(.transport, "cannot map shared memory: \(String(cString: strerror(errno)))")
        }
        return mapped
    }
}

/// First-fit allocation of page-aligned blocks within one range of a shared file. One process
/// allocates and frees in each range (the broker in the jobs', the worker in the results'), so
/// the bookkeeping is private to it; freeing joins neighbouring free blocks.
struct PageAllocator {
    static let pageBytes = 4096
    let range: Range<Int>
    /// Free blocks, sorted by offset, never touching one another.
    private var free: [Range<Int>]
    /// Blocks handed out: offset → length.
    private var allocated: [Int: Int] = [:]

    init(range: Range<Int>) {
        self.range = range
        free = range.isEmpty ? [] : [range]
    }

    /// The offset of a new block of at least `byteCount` bytes, or nil when none is free.
    mutating func allocate(_ byteCount: Int) -> Int? {
        guard byteCount > 0 else { return nil }
        let length = (byteCount + Self.pageBytes - 1) / Self.pageBytes * Self.pageBytes
        guard let index = free.firstIndex(where: { $0.count >= length }) else { return nil }
        let offset = free[index].lowerBound
        if free[index].count == length {
            free.remove(at: index)
        } else {
            free[index] = (offset + length)..<free[index].upperBound
        }
        allocated[offset] = length
        return offset
    }

    /// Frees the block at `offset`; false when no block starts there.
    @discardableResult
    mutating func free(_ offset: Int) -> Bool {
        guard let length = allocated.removeValue(forKey: offset) else { return false }
        var block = offset..<(offset + length)
        let next = free.firstIndex { $0.lowerBound > offset } ?? free.endIndex
        if next < free.endIndex, free[next].lowerBound == block.upperBound {
            block = block.lowerBound..<free[next].upperBound
            free.remove(at: next)
        }
        if next > 0, free[next - 1].upperBound == block.lowerBound {
            block = free[next - 1].lowerBound..<block.upperBound
            free[next - 1] = block
        } else {
            free.insert(block, at: next)
        }
        return true
    }

    /// The length of the block at `offset` (nil when none starts there).
    func length(at offset: Int) -> Int? { allocated[offset] }

    /// Bytes handed out and not freed.
    var allocatedBytes: Int { allocated.values.reduce(0, +) }
}

/// Where one part of a job or result travels: in the message, or in the shared file.
enum PartPlacement: Equatable, Sendable {
    case inline
    case shared(offset: Int, length: Int)

    /// Parts from this size on go through shared memory; smaller ones are not worth a block.
    static let sharedFromBytes = 64 * 1024

    /// The message frame that lists the placements: `-` for a part in the message (they follow in
    /// order), `OFFSET+LENGTH` for one in the shared file, separated by commas.
    static func layout(_ placements: [PartPlacement]) -> String {
        placements.map { placement in
            switch placement {
            case .inline: "-"
            case .shared(let offset, let length): "\(offset)+\(length)"
            }
        }.joined(separator: ",")
    }

    /// The placements a layout frame lists, each shared part within `range`; nil when malformed.
    static func parse(layout: String, within range: Range<Int>, maxParts: Int = 64) -> [PartPlacement]? {
        // A message without parts (a job that failed comes back so).
        if layout.isEmpty { return [] }
        let entries = layout.split(separator: ",", omittingEmptySubsequences: false)
        guard entries.count <= maxParts else { return nil }
        var placements: [PartPlacement] = []
        for entry in entries {
            if entry == "-" {
                placements.append(.inline)
                continue
            }
            let numbers = entry.split(separator: "+", omittingEmptySubsequences: false)
            guard numbers.count == 2, let offset = Int(numbers[0]), let length = Int(numbers[1]), length > 0,
                offset >= range.lowerBound, length <= range.upperBound - offset
            else { return nil }
            placements.append(.shared(offset: offset, length: length))
        }
        return placements
    }

    /// The frames that carry `parts` placed so: the layout, then the parts that travel in the message.
    static func frames(_ parts: [Data], placed placements: [PartPlacement]) -> [ZMQPart] {
        [.text(layout(placements))] + zip(parts, placements).filter { $0.1 == .inline }.map { .shared($0.0) }
    }

    /// The parts that `frames` (a layout, then the parts in the message) carry, those in shared
    /// memory made by `view` (offset, length); nil when the layout is malformed, reaches outside
    /// `range`, or does not match the frames that follow it.
    static func parts(
        from frames: ArraySlice<ZMQMessage>, within range: Range<Int>, view: (_ offset: Int, _ length: Int) -> Data
    ) -> [Data]? {
        guard let layoutFrame = frames.first, let placements = parse(layout: layoutFrame.string, within: range),
            placements.filter({ $0 == .inline }).count == frames.count - 1
        else { return nil }
        var inline = frames.dropFirst().makeIterator()
        return placements.map { placement in
            switch placement {
            case .inline: inline.next()!.sharedData
            case .shared(let offset, let length): view(offset, length)
            }
        }
    }

    /// Offsets listed in a FREE message (`OFFSET,OFFSET,…`); nil when malformed.
    static func parse(offsets: String, maxCount: Int = 4096) -> [Int]? {
        let entries = offsets.split(separator: ",")
        guard entries.count <= maxCount else { return nil }
        let numbers = entries.compactMap { Int($0) }
        return numbers.count == entries.count ? numbers : nil
    }
}

/// The split of a worker's shared file: a header page (the token), the jobs' range (the broker
/// allocates there and writes jobs) and the results' range (the worker allocates and writes results).
struct SharedFileLayout {
    let jobs: Range<Int>
    let results: Range<Int>

    init(byteCount: Int) {
        let header = PageAllocator.pageBytes
        let half = (byteCount - header) / 2 / PageAllocator.pageBytes * PageAllocator.pageBytes
        jobs = header..<(header + half)
        results = (header + half)..<(header + 2 * half)
    }

    /// Smallest file offered: room for one 512 × 512 set each way.
    static let minimumBytes = 16 << 20
    /// Largest file a broker maps.
    static let maximumBytes = 64 << 30
}

/// A worker's side of its shared file, for one connection to a broker: results are written in
/// its results' range and lent to the broker until it frees them; jobs arrive in its jobs' range
/// and are handed back once the worker lets go of them.
final class WorkerSharedSpace: @unchecked Sendable {  // mutable state guarded by `lock`
    let file: SharedMemoryFile
    let layout: SharedFileLayout
    private let lock = NSLock()
    private var results: PageAllocator
    /// Result blocks a `Data` in this process still covers.
    private var held: Set<Int> = []
    /// Result blocks the broker reads until it sends FREE.
    private var lent: Set<Int> = []
    /// Job blocks this worker is done with, not yet handed back.
    private var finishedJobs: [Int] = []

    init(byteCount: Int) throws {
        file = try SharedMemoryFile(creating: byteCount)
        layout = SharedFileLayout(byteCount: byteCount)
        results = PageAllocator(range: layout.results)
    }

    /// `byteCount` bytes in the results' range written by `fill`, which must write every one;
    /// nil when the range is full.
    func resultData(byteCount: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Data? {
        let allocated = lock.withLock {
            let offset = results.allocate(byteCount)
            if let offset { held.insert(offset) }
            return offset
        }
        guard let offset = allocated else { return nil }
        let start = file.base + offset
        do {
            try fill(UnsafeMutableRawBufferPointer(start: start, count: byteCount))
        } catch {
            released(offset)
            throw error
        }
        return Data(bytesNoCopy: start, count: byteCount, deallocator: .custom { [self] _, _ in released(offset) })
    }

    /// Where a result part goes: a block of the results' range it already is in, a new one it is
    /// copied to, or (small, or no room) the message itself. A shared block is lent to the broker.
    func place(_ part: Data) -> PartPlacement {
        guard part.count >= PartPlacement.sharedFromBytes else { return .inline }
        let start = part.withUnsafeBytes { $0.baseAddress! }
        let offset = start - UnsafeRawPointer(file.base)
        return lock.withLock {
            if held.contains(offset), !lent.contains(offset), let length = results.length(at: offset),
                part.count <= length
            {
                lent.insert(offset)
                return .shared(offset: offset, length: part.count)
            }
            guard let block = results.allocate(part.count) else { return .inline }
            part.copyBytes(to: (file.base + block).assumingMemoryBound(to: UInt8.self), count: part.count)
            lent.insert(block)
            return .shared(offset: block, length: part.count)
        }
    }

    /// The broker is done with the result block at `offset` (anything else is ignored).
    func brokerFreed(_ offset: Int) {
        lock.withLock {
            guard lent.remove(offset) != nil, !held.contains(offset) else { return }
            results.free(offset)
        }
    }

    /// The last `Data` over a result block is gone.
    private func released(_ offset: Int) {
        lock.withLock {
            held.remove(offset)
            if !lent.contains(offset) { results.free(offset) }
        }
    }

    /// A job part the broker wrote at `offset`; handed back when the last `Data` over it goes.
    func jobPart(offset: Int, length: Int) -> Data {
        Data(
            bytesNoCopy: file.base + offset, count: length,
            deallocator: .custom { [self] _, _ in lock.withLock { finishedJobs.append(offset) } })
    }

    /// Job blocks to hand back to the broker (taken: each is handed back once).
    func takeFinishedJobs() -> [Int] {
        lock.withLock {
            defer { finishedJobs = [] }
            return finishedJobs
        }
    }

    /// Result bytes written and not yet freed (by this worker and the broker).
    var resultBytesInUse: Int { lock.withLock { results.allocatedBytes } }
}

/// The broker's side of a worker's shared file: it allocates and writes jobs in the jobs' range
/// (on its own thread) and reads results the worker lends it in the results' range.
final class BrokerSharedSpace: @unchecked Sendable {  // `jobs` used under the broker's lock only
    let file: SharedMemoryFile
    let layout: SharedFileLayout
    var jobs: PageAllocator

    init(file: SharedMemoryFile) {
        self.file = file
        layout = SharedFileLayout(byteCount: file.byteCount)
        jobs = PageAllocator(range: layout.jobs)
    }

    /// Where a job part goes: copied into a new block of the jobs' range, or (small, or no room)
    /// the message itself.
    func place(_ part: Data) -> PartPlacement {
        guard part.count >= PartPlacement.sharedFromBytes, let block = jobs.allocate(part.count) else { return .inline }
        part.copyBytes(to: (file.base + block).assumingMemoryBound(to: UInt8.self), count: part.count)
        return .shared(offset: block, length: part.count)
    }
}

/// Where a worker's processor writes large results: in the memory it shares with a broker on the
/// same machine (they then go back without a copy), or nowhere (nil: the processor uses its own
/// buffers) when the broker is elsewhere or the memory is full.
public final class WorkResultMemory: @unchecked Sendable {  // `space` guarded by `lock`
    private let lock = NSLock()
    private var space: WorkerSharedSpace?

    public init() {}

    /// The space of the worker's connection now (nil: none shared).
    func use(_ space: WorkerSharedSpace?) { lock.withLock { self.space = space } }

    /// Bytes of results in the space now (written and not yet freed by the worker and the broker).
    var bytesInUse: Int { lock.withLock { space }?.resultBytesInUse ?? 0 }

    /// `byteCount` bytes written by `fill` (which must write every one) in shared memory, or nil
    /// when there is none or it is full.
    public func data(byteCount: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> Data? {
        guard let space = lock.withLock({ space }) else { return nil }
        return try space.resultData(byteCount: byteCount, fill)
    }
}
