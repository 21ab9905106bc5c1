import ArgumentParser
import Foundation
import MoireConfig
import MoireHardware

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List USB devices that match a device profile, and serial ports.")
    @Option(name: .long, help: "Folder of device profiles.") var profiles = "hardware-profiles"

    func run() throws {
        bootstrapLogging(verbose: false)
        var matched = 0, seen = 0
        do {
            let usb = try USBContext()
            let devs = try usb.devices()
            seen = devs.count
            let known = loadProfiles()
            for d in devs {
                for p in known where p.connection["usb_vendor"].flatMap({ UInt16($0.replacingOccurrences(of: "0x", with: ""), radix: 16) }) == d.vendorID
                    && p.connection["usb_product"].flatMap({ UInt16($0.replacingOccurrences(of: "0x", with: ""), radix: 16) }) == d.productID {
                    print(String(format: "usb %03d:%03d %04x:%04x  %@ (%@)", d.bus, d.address, d.vendorID, d.productID, p.model, p.file))
                    matched += 1
                }
            }
        } catch {
            print("usb: not available here (\(error))")
        }
        print("usb: \(seen) device(s) on the bus, \(matched) matching a profile")
        let dev = (try? FileManager.default.contentsOfDirectory(atPath: "/dev")) ?? []
        let ports = dev.filter { $0.hasPrefix("ttyUSB") || $0.hasPrefix("ttyACM") }.sorted()
        print("serial: \(ports.isEmpty ? "no ports" : ports.map { "/dev/\($0)" }.joined(separator: ", "))")
    }

    private func loadProfiles() -> [DeviceProfile] {
        guard let e = FileManager.default.enumerator(atPath: profiles) else { return [] }
        return e.compactMap { ($0 as? String).flatMap { $0.hasSuffix(".yaml") ? try? DeviceProfile.load(file: "\(profiles)/\($0)") : nil } }
    }
}
