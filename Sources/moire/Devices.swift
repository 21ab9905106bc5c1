import ArgumentParser
import Foundation
import MoireConfig
import MoireHardware

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "List the USB devices libusb sees that match a device profile (or are USB3 Vision cameras), and the serial ports."
    )
    @Option(name: .long, help: "Folder of device profiles.") var profiles = "hardware-profiles"

    func run() throws {
        bootstrapLogging(verbose: false)
        let known = loadProfiles()
        var matched = 0
        var seen = 0
        do {
            let usb = try USBContext()
            let devs = try usb.devices()
            seen = devs.count
            for d in devs {
                let hits = known.filter { p in
                    p.connection["vendor_id"].flatMap(parseHex16) == d.vendorID
                        && (p.connection["product_id"].flatMap(parseHex16) ?? d.productID) == d.productID
                }
                for p in hits {
                    print(
                        String(
                            format: "usb %03d:%03d %04x:%04x  %@ (%@)", d.bus, d.address, d.vendorID, d.productID,
                            p.model, p.file))
                }
                if hits.isEmpty, d.isUSB3Vision {
                    print(
                        String(
                            format:
                                "usb %03d:%03d %04x:%04x  USB3 Vision camera (no profile names it; the generic usb3vision profile drives it)",
                            d.bus, d.address, d.vendorID, d.productID))
                }
                if !hits.isEmpty || d.isUSB3Vision { matched += 1 }
            }
        } catch {
            print("usb: not available here (\(error))")
        }
        print("usb: \(seen) device(s) on the bus, \(matched) matching a profile")
        let dev = (try? FileManager.default.contentsOfDirectory(atPath: "/dev")) ?? []
        let ports = dev.filter { $0.hasPrefix("ttyUSB") || $0.hasPrefix("ttyACM") }.sorted()
        print(
            "serial: \(ports.isEmpty ? "no USB serial ports (/dev/ttyUSB*, /dev/ttyACM*)" : ports.map { "/dev/\($0)" }.joined(separator: ", "))"
        )
        let serialProfiles = known.filter { $0.driver == .serialAscii }
        let wanted = Set(serialProfiles.compactMap { $0.connection["port"] })
        for port in wanted.sorted() {
            let users = serialProfiles.filter { $0.connection["port"] == port }.map(\.model)
            print(
                "  \(port) \(FileManager.default.fileExists(atPath: port) ? "present" : "absent"): \(users.count) profile(s) use it"
            )
        }
    }

    private func loadProfiles() -> [DeviceProfile] {
        guard let e = FileManager.default.enumerator(atPath: profiles) else { return [] }
        return e.compactMap {
            ($0 as? String).flatMap {
                $0.hasSuffix(".yaml") && !$0.hasPrefix("rigs/")
                    ? try? DeviceProfile.load(file: "\(profiles)/\($0)") : nil
            }
        }
    }
}
