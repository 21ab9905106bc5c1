import Foundation
import MoireCore

/// The USB3 Vision control channel over the device's control interface (class 0xEF/0x05,
/// protocol 0): GenCP commands out on its bulk OUT endpoint, acknowledges in on its bulk IN.
// Sendable by hand: immutable; transfers go through USBDevice's `lock`.
public final class USBControlTransport: ControlTransport, @unchecked Sendable {
    let device: USBDevice
    let outEP: UInt8, inEP: UInt8

    init(device: USBDevice, out: UInt8, in input: UInt8) { self.device = device; outEP = out; inEP = input }

    public func send(_ bytes: [UInt8], timeoutMs: Int) throws {
        try device.write(endpoint: outEP, bytes, timeoutMs: timeoutMs)
    }
    public func receive(timeoutMs: Int) throws -> [UInt8]? {
        try device.read(endpoint: inEP, maxBytes: 4096, timeoutMs: timeoutMs)
    }
}

/// The USB3 Vision stream channel over the stream interface's bulk IN endpoint, with several
/// transfers in flight (sized at the first read to the SIRM's payload transfer size).
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class USBStreamTransport: StreamTransport, @unchecked Sendable {
    let device: USBDevice
    let inEP: UInt8
    private var reader: USBAsyncReader?
    private let lock = NSLock()

    init(device: USBDevice, in input: UInt8) { self.device = device; inEP = input }

    public func read(maxBytes: Int, timeoutMs: Int) throws -> [UInt8]? {
        lock.lock()
        if reader == nil || reader!.transferBytes < maxBytes {
            reader?.stop()
            reader = try USBAsyncReader(device: device, endpoint: inEP, transferBytes: max(maxBytes, 1024))
        }
        let r = reader!
        lock.unlock()
        return try r.read(timeoutMs: timeoutMs)
    }

    deinit { reader?.stop() }
}

public enum USB3VisionUSB {
    /// Opens a USB3 Vision camera: by `vendor_id`/`product_id` from the profile's connection when
    /// given, else the first device with a USB3 Vision control interface; claims control and stream.
    public static func open(context: USBContext, connection: [String: String]) throws -> (
        ControlTransport, StreamTransport
    ) {
        let vid = connection["vendor_id"].flatMap(parseHex16)
        let pid = connection["product_id"].flatMap(parseHex16)
        let dev = try context.open(
            vid.map { String(format: "USB3 Vision %04x:%04x", $0, pid ?? 0) } ?? "USB3 Vision camera"
        ) { d in
            d.isUSB3Vision && (vid == nil || (d.vendorID == vid && (pid == nil || d.productID == pid)))
        }
        guard
            let ctl = dev.info.interface(
                class: USBDeviceInfo.u3vClass, subclass: USBDeviceInfo.u3vSubclass, protocol: 0),
            let cOut = ctl.endpoint(type: 2, input: false), let cIn = ctl.endpoint(type: 2, input: true)
        else {
            throw MoireError(.hardware, "no USB3 Vision control interface with bulk endpoints", place: dev.what)
        }
        guard
            let str = dev.info.interface(
                class: USBDeviceInfo.u3vClass, subclass: USBDeviceInfo.u3vSubclass, protocol: 2),
            let sIn = str.endpoint(type: 2, input: true)
        else {
            throw MoireError(.hardware, "no USB3 Vision stream interface", place: dev.what)
        }
        try dev.claim(interface: ctl.number)
        try dev.claim(interface: str.number)
        return (USBControlTransport(device: dev, out: cOut, in: cIn), USBStreamTransport(device: dev, in: sIn))
    }
}

/// HID reports over a device's HID interface (class 3) interrupt endpoints: the report number is
/// dropped on the wire (DLPC900 uses report 0 only), 64-byte reports each way.
// Sendable by hand: immutable; transfers go through USBDevice's `lock`.
public final class USBHIDTransport: HIDTransport, @unchecked Sendable {
    let device: USBDevice
    let outEP: UInt8, inEP: UInt8

    /// Opens `vendor:product` (DLPC900: 0451:C900) and claims its HID interface.
    public init(context: USBContext, vendor: UInt16, product: UInt16) throws {
        device = try context.open(vendor: vendor, product: product)
        guard let hid = device.info.interfaces.first(where: { $0.interfaceClass == 3 }),
            let o = hid.endpoint(type: 3, input: false), let i = hid.endpoint(type: 3, input: true)
        else {
            throw MoireError(.hardware, "no HID interface with interrupt endpoints", place: device.what)
        }
        try device.claim(interface: hid.number)
        outEP = o; inEP = i
    }

    public func write(report: [UInt8], timeoutMs: Int) throws {
        let body = report.count == DLPC900.reportSize + 1 ? Array(report.dropFirst()) : report
        try device.write(endpoint: outEP, body, timeoutMs: timeoutMs, interrupt: true)
    }

    public func read(timeoutMs: Int) throws -> [UInt8]? {
        try device.read(endpoint: inEP, maxBytes: DLPC900.reportSize, timeoutMs: timeoutMs, interrupt: true)
    }
}

/// "0x2BDE", "2bde" → 0x2BDE.
public func parseHex16(_ s: String) -> UInt16? {
    let t = s.lowercased().hasPrefix("0x") ? String(s.dropFirst(2)) : s
    return UInt16(t, radix: 16)
}
