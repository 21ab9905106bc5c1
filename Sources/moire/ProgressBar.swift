import Foundation
import MoireAcquisition

/// A one-line progress bar on stderr: frames, rate, ETA, missing.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
final class ProgressBar: @unchecked Sendable {
    private let isTTY = isatty(STDERR_FILENO) != 0
    private var lastDraw = Date.distantPast
    private var lastPercent = -1
    private let lock = NSLock()
    let quiet: Bool

    init(quiet: Bool) { self.quiet = quiet }

    func update(_ p: RunProgress, force: Bool = false) {
        guard !quiet, p.planned > 0 else { return }
        lock.lock(); defer { lock.unlock() }
        let now = Date()
        let percent = p.done * 100 / p.planned
        if isTTY {
            guard force || now.timeIntervalSince(lastDraw) > 0.1 || p.done == p.planned else { return }
        } else {
            guard force || percent / 10 != lastPercent / 10 else { return }
        }
        lastDraw = now; lastPercent = percent
        let secs = Double(p.elapsedNs) / 1e9
        let rate = secs > 0 ? Double(p.done) / secs : 0
        let eta = rate > 0 ? Double(p.planned - p.done) / rate : 0
        let width = 30
        let filled = width * p.done / p.planned
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let line = String(
            format: "%@ %d/%d frames  %.1f fps  ETA %.1fs  missing %d", bar, p.done, p.planned, rate, eta, p.missing)
        FileHandle.standardError.write(
            Data((isTTY ? "\r\u{1B}[K" : "").utf8 + Data(line.utf8) + Data((isTTY ? "" : "\n").utf8)))
    }

    func finish() {
        guard !quiet, isTTY else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
