import CUSB
import Foundation
import MoireCore

/// The one funnel for libusb calls: negative results become typed errors.
func usbCall(_ what: @autoclosure () -> String, _ rc: Int32) throws {
    if rc >= 0 { return }
    throw MoireError(.hardware, "\(what()): \(String(cString: libusb_error_name(rc)))")
}

/// A USB device seen on the bus.
public struct USBDeviceInfo: Sendable, Equatable {
    public var bus: Int
    public var address: Int
    public var vendorID: UInt16
    public var productID: UInt16
    public var deviceClass: UInt8
}

/// A libusb context (shared handle).
public final class USBContext: @unchecked Sendable {
    let ctx: OpaquePointer

    public init() throws {
        var c: OpaquePointer?
        try usbCall("libusb_init", libusb_init(&c))
        guard let c else { throw MoireError(.hardware, "libusb_init returned no context") }
        ctx = c
    }

    deinit { libusb_exit(ctx) }

    /// Every device libusb can see (empty on machines without USB access).
    public func devices() throws -> [USBDeviceInfo] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = libusb_get_device_list(ctx, &list)
        if n < 0 { try usbCall("libusb_get_device_list", Int32(n)) }
        defer { libusb_free_device_list(list, 1) }
        var out: [USBDeviceInfo] = []
        for i in 0..<Int(n) {
            guard let dev = list?[i] else { continue }
            var d = libusb_device_descriptor()
            guard libusb_get_device_descriptor(dev, &d) == 0 else { continue }
            out.append(USBDeviceInfo(bus: Int(libusb_get_bus_number(dev)), address: Int(libusb_get_device_address(dev)),
                                     vendorID: d.idVendor, productID: d.idProduct, deviceClass: d.bDeviceClass))
        }
        return out
    }
}
