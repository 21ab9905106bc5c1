import Foundation
import MoireCore
import MoireHardware
import Testing

/// The libusb layer, on a machine that may have no USB devices at all: it initialises, lists what
/// it sees, and reports a missing device as a clear error; streaming stays under the usbfs limit.
@Suite struct USBLayerTests {
    @Test func libusbListsDevicesAndAMissingDeviceIsAClearError() throws {
        let usb = try USBContext()
        let devices = try usb.devices()  // empty here (no /dev/bus/usb), a real list on a rig
        #expect(devices.allSatisfy { $0.bus >= 0 && $0.address >= 0 })
        // No device answers to a vendor id nobody uses.
        do { _ = try usb.open(vendor: 0xFFFE, product: 0x0001); Issue.record("opened a device that is not there") } catch let e as MoireError {
            #expect(e.kind == .hardware && e.message.contains("fffe:0001") && e.message.contains("plugged in"))
        }
        do { _ = try USBHIDTransport(context: usb, vendor: 0xFFFE, product: 0xC900); Issue.record("opened a DMD that is not there") } catch let e as MoireError {
            #expect(e.message.contains("no USB device"))
        }
        do { _ = try USB3VisionUSB.open(context: usb, connection: [:]); Issue.record("opened a camera that is not there") } catch let e as MoireError {
            #expect(e.message.contains("USB3 Vision"))
        }
    }

    @Test func libusbErrorsMapToTypedErrors() {
        #expect(usbError(-4, "read").kind == .hardware && usbError(-4, "read").message.contains("disconnected"))  // LIBUSB_ERROR_NO_DEVICE
        #expect(usbError(-7, "read").kind == .deadline)                                                        // LIBUSB_ERROR_TIMEOUT
        #expect(usbError(-3, "open").message.contains("permission"))                                            // LIBUSB_ERROR_ACCESS
        #expect(usbError(-6, "claim").message.contains("another program"))                                      // LIBUSB_ERROR_BUSY
        #expect(usbError(-8, "read").kind == .format)                                                           // LIBUSB_ERROR_OVERFLOW
    }

    @Test func transfersInFlightStayUnderTheUsbfsLimit() {
        let limit = 16 << 20
        #expect(USBContext.transfersInFlight(wanted: 8, transferBytes: 1 << 20, limitBytes: limit) == 8)
        #expect(USBContext.transfersInFlight(wanted: 32, transferBytes: 1 << 20, limitBytes: limit) == 8)
        #expect(USBContext.transfersInFlight(wanted: 8, transferBytes: 64 << 20, limitBytes: limit) == 1)
        #expect(USBContext.transfersInFlight(wanted: 12, transferBytes: 1 << 20, limitBytes: Int.max) == 12)
        let dir = NSTemporaryDirectory() + "usbfs-\(UUID().uuidString)"
        try? "4\n".write(toFile: dir, atomically: true, encoding: .utf8)
        #expect(USBContext.usbfsLimitBytes(path: dir) == 4 << 20)
        #expect(USBContext.usbfsLimitBytes(path: "/nonexistent") == 16 << 20)
    }
}
