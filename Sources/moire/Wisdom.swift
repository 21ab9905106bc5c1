import ArgumentParser
import Foundation
import MoirePipeline

/// `moire wisdom PROTOCOL…`: measured FFT plans for the protocols' shapes, saved once per machine.
struct WisdomCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wisdom",
        abstract:
            "Make FFTW wisdom for the protocols' shapes once on this machine, so live runs plan their transforms at once.",
        discussion:
            "Light-sheet deconvolution of large stacks can take minutes to measure the first time; with the wisdom, a live run's first volume does not wait for it. Saved to \(Runtime.fftWisdomPath)."
    )

    @Argument(help: "Protocol files (YAML).") var protocols: [String]

    func run() throws {
        bootstrapLogging(verbose: false)
        Runtime.prepareFFT()
        do {
            for file in protocols {
                let report = try Wisdom.make(protocolFile: file) { shape in
                    FileHandle.standardError.write(Data("measuring plans: \(shape)…\n".utf8))
                }
                if report.shapes.isEmpty {
                    print("\(file): no transforms planned ahead for this mode")
                } else {
                    print(
                        String(format: "%@: %@ (%.1f s)", file, report.shapes.joined(separator: "; "), report.seconds))
                }
            }
            try Wisdom.save()
            print("wisdom saved to \(Runtime.fftWisdomPath)")
        } catch { throw fail(error) }
    }
}
