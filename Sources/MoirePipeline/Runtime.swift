import Foundation
import MoireFFT

/// Process-wide set-up shared by the executables.
public enum Runtime {
    /// FFTW with one thread per core and the wisdom saved by earlier runs.
    public static func prepareFFT() {
        FFT.useThreads(ProcessInfo.processInfo.activeProcessorCount)
        FFT.loadWisdom()
    }

    /// Saves the FFTW wisdom gathered in this run (best effort).
    public static func saveFFTWisdom() { try? FFT.saveWisdom() }

    /// Where the wisdom is kept.
    public static var fftWisdomPath: String { FFT.defaultWisdomPath }

    /// Keeps freed memory in the process for the next frame instead of returning it to the system.
    ///
    /// The stages allocate and free buffers of one to a few megabytes per frame (a denoised frame,
    /// its normalised copy, the temporal context's passes). glibc returns such memory to the system
    /// when the top of its heap holds more than its trim threshold free, and serves large requests
    /// from fresh mappings, so the next frame's buffers fault in and are zeroed page by page again:
    /// measured on `moire bench denoise` (2 cores), 39 000 of 88 000 page faults in one run and
    /// about 10 % of its CPU time. With a fixed threshold of 64 MB for fresh mappings and 256 MB of
    /// free heap kept, the buffers are reused. glibc only (looked up at run time); elsewhere nothing.
    public static func keepFreedMemoryForReuse() {
        typealias MemoryAllocatorOption = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let setOption = unsafeBitCast(symbol, to: MemoryAllocatorOption.self)
        let trimThreshold: Int32 = -1  // M_TRIM_THRESHOLD in <malloc.h>
        let mappingThreshold: Int32 = -3  // M_MMAP_THRESHOLD
        _ = setOption(trimThreshold, 256 << 20)
        _ = setOption(mappingThreshold, 64 << 20)
    }

    /// The environment variable that marks `OMP_WAIT_POLICY` as set by Moiré, not by the user.
    public static let waitPolicyMarker = "MOIRE_SET_OMP_WAIT_POLICY"

    /// Lets oneDNN's OpenMP threads sleep as soon as a primitive ends.
    ///
    /// By default libgomp's threads spin for milliseconds after each parallel region (its spin
    /// count), holding a core that the denoiser's own passes between primitives and the
    /// pipeline's other stages (SIM on FFTW and Dispatch threads, the recorder) need: measured on 2
    /// cores, the denoiser's nearest-neighbour upsampling and skip sum took 3.3–4.1 ms per frame with
    /// spinning threads beside it and 1.3–1.9 ms without, and whole frames ran 1.2× faster. libgomp
    /// reads the policy once, when it is loaded, before `main`: a process that finds no policy set
    /// sets `OMP_WAIT_POLICY=PASSIVE` and runs itself again (once). A policy the user set is kept.
    /// For the daemon and the commands whose stages run side by side: one stage of many small
    /// training primitives alone runs faster with the spinning default.
    public static func preferSleepingOpenMPThreads() {
        guard getenv("OMP_WAIT_POLICY") == nil else { return }
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
        setenv(waitPolicyMarker, "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // No /proc (exec failed): carry on with the default policy.
        unsetenv("OMP_WAIT_POLICY")
        unsetenv(waitPolicyMarker)
    }

    /// This process's environment as the user gave it: without the wait policy that
    /// `preferSleepingOpenMPThreads` set (for other programs this one starts, such as a benchmark's peer).
    public static var environmentAsGiven: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        if environment.removeValue(forKey: waitPolicyMarker) != nil {
            environment.removeValue(forKey: "OMP_WAIT_POLICY")
        }
        return environment
    }
}
