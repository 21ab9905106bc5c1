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
}
