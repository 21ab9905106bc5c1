import Foundation
import Metrics
import MoireCore

/// The pipeline's figures as swift-metrics metrics. `moired` bootstraps a Prometheus backend and
/// serves them (`--metrics`, docs/operations.md); without a backend they cost next to nothing.
/// Each metric is made on first use, so after the process bootstrapped its backend.
enum PipelineMetrics {
    /// Raw frames by result: `delivered` (a frame came) or `missing` (the plan expected one, none came).
    static let rawDelivered = Counter(label: "moire_raw_frames_total", dimensions: [("result", "delivered")])
    static let rawMissing = Counter(label: "moire_raw_frames_total", dimensions: [("result", "missing")])
    /// Of the missing frames: lost because the frame pool was exhausted.
    static let poolExhausted = Counter(label: "moire_pool_exhausted_frames_total")
    /// Complete phase sets of live 2D-SIM by what became of them.
    static let simReconstructed = Counter(label: "moire_sim_sets_total", dimensions: [("result", "reconstructed")])
    static let simSkippedBehind = Counter(label: "moire_sim_sets_total", dimensions: [("result", "skipped_behind")])
    static let simSkippedMissing = Counter(
        label: "moire_sim_sets_total", dimensions: [("result", "skipped_missing_frame")])
    /// Frames the live denoiser published.
    static let denoised = Counter(label: "moire_denoised_frames_total")
    /// The live denoiser's inference weights version, and its latest adaptation loss.
    static let denoiseWeightsVersion = Gauge(label: "moire_denoise_weights_version")
    static let denoiseLoss = Gauge(label: "moire_denoise_adaptation_loss")
    /// Volumes made by the light-sheet and 3D-SIM stages.
    static func volumes(stage: String) -> Counter {
        Counter(label: "moire_volumes_total", dimensions: [("stage", stage)])
    }
    /// Runs ended, by reason (`completed`, `stopped`, `aborted`, `fault`).
    static func runs(reason: String) -> Counter { Counter(label: "moire_runs_total", dimensions: [("reason", reason)]) }

    /// The time a stage adds: from the raw frame's publication to the derived frame's. Made once
    /// per stage (not per frame: a metric's creation goes through the backend's registry).
    static func latency(stage: String) -> Timer {
        Timer(label: "moire_stage_latency_seconds", dimensions: [("stage", stage)], preferredDisplayUnit: .seconds)
    }

    /// Records on `timer` the time since `publishedNs` (ns since the epoch; 0: unknown).
    static func record(_ timer: Timer, sincePublishedNs publishedNs: Int64) {
        guard publishedNs > 0 else { return }
        let elapsed = unixTimeNs() - publishedNs
        guard elapsed >= 0 else { return }
        timer.recordNanoseconds(elapsed)
    }
}
