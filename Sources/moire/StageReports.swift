import MoirePipeline

/// What the live stages of a run or a replay did, a line each: SIM, light sheet, 3D-SIM, denoising
/// (with the work their workers did).
func printStageReports(_ r: PipelineResult) {
    if let c = r.sim {
        print(
            "live SIM: \(c.reconstructed) SR frames from \(c.setsComplete) complete phase sets (\(c.skippedBehind) skipped while busy, \(c.skippedMissing) with a missing frame)"
                + (r.srRecording.map { "; SR recording \($0)" } ?? ""))
        printWork(c.setsByWorker, of: "SIM workers", unit: "sets")
        if c.setsThroughSharedMemory > 0 {
            print("SIM workers on this machine: \(c.setsThroughSharedMemory) sets handed over in shared memory")
        }
    }
    if let c = r.volumes {
        print(
            "live light sheet: \(c.volumes) volumes from \(c.stacksComplete) stacks (\(c.skippedBehind) skipped while busy, \(c.missingPlanes) missing planes filled)"
                + (r.volumeRecording.map { c.volumes > 0 ? "; volumes recorded to \($0)" : "" } ?? ""))
        printWork(c.stacksByWorker, of: "light-sheet workers", unit: "stacks")
    }
    if let c = r.sim3d {
        print(
            "live 3D-SIM: \(c.volumes) SR volumes from \(c.stacksComplete) stacks (\(c.skippedBehind) skipped while busy, \(c.skippedMissing) with a missing frame)"
                + (r.sim3dRecording.map { c.volumes > 0 ? "; SR volumes recorded to \($0)" : "" } ?? ""))
        printWork(c.stacksByWorker, of: "3D-SIM workers", unit: "stacks")
    }
    if let c = r.denoise {
        print(
            "live denoising: \(c.denoised) frames, \(c.adaptationSteps) adaptation steps, \(c.skipped) skipped while busy, \(c.resets) resets"
                + (r.denoiseCheckpoints.map {
                    c.checkpoints > 0 ? "; \(c.checkpoints) weight checkpoints in \($0)" : ""
                } ?? "")
                + (r.deconvolutionCheckpoints != nil ? "; \(c.deconvolved) frames deconvolved" : ""))
        print("denoising noise model: \(c.noiseModel) (\(c.noiseSource))")
        printWork(c.framesByWorker, of: "denoising workers", unit: "frames")
    }
}

/// What each worker did (`label: worker count, … unit`), when workers did any of the stage's work.
private func printWork(_ byWorker: [String: Int], of label: String, unit: String) {
    guard !byWorker.isEmpty else { return }
    let counts = byWorker.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
    print("\(label): " + counts.joined(separator: ", ") + " \(unit)")
}
