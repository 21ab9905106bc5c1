import CUSB
import DequeModule
import Foundation
import MoireCore

/// The one funnel for libusb results: negative codes become typed errors (a vanished device, a
/// timeout, access, busy), each naming the call.
func usbCall(_ what: @autoclosure () -> String, _ rc: Int32, place: String? = nil) throws {
    if rc >= 0 { return }
    throw usbError(rc, what(), place: place)
}

/// The `MoireError` for a libusb error code.
public func usbError(_ rc: Int32, _ what: String, place: String? = nil) -> MoireError {
    let name = String(cString: libusb_error_name(rc))
    switch rc {
    case LIBUSB_ERROR_NO_DEVICE.rawValue:
        return MoireError(.hardware, "\(what): device disconnected (\(name))", place: place)
    case LIBUSB_ERROR_TIMEOUT.rawValue:
        return MoireError(.deadline, "\(what): timed out (\(name))", place: place)
    case LIBUSB_ERROR_ACCESS.rawValue:
        return MoireError(
            .hardware,
            "\(what): permission denied (\(name)); add a udev rule for the device or run with access to /dev/bus/usb",
            place: place)
    case LIBUSB_ERROR_BUSY.rawValue:
        return MoireError(.hardware, "\(what): the interface is claimed by another program (\(name))", place: place)
    case LIBUSB_ERROR_NOT_FOUND.rawValue:
        return MoireError(.hardware, "\(what): not found (\(name))", place: place)
    case LIBUSB_ERROR_PIPE.rawValue:
        return MoireError(.hardware, "\(what): endpoint stalled (\(name))", place: place)
    case LIBUSB_ERROR_OVERFLOW.rawValue:
        return MoireError(.format, "\(what): the device sent more than the buffer holds (\(name))", place: place)
    default:
        return MoireError(.hardware, "\(what): \(name)", place: place)
    }
}

/// An interface of a USB device, with its endpoints.
public struct USBInterfaceInfo: Sendable, Equatable {
    public var number: Int
    public var interfaceClass: UInt8
    public var subclass: UInt8
    public var protocolCode: UInt8
    /// Endpoint addresses (bit 7: IN) with their transfer type (2 bulk, 3 interrupt).
    public var endpoints: [(address: UInt8, type: UInt8, maxPacket: Int)]

    public static func == (a: USBInterfaceInfo, b: USBInterfaceInfo) -> Bool {
        a.number == b.number && a.interfaceClass == b.interfaceClass && a.subclass == b.subclass
            && a.protocolCode == b.protocolCode
            && a.endpoints.map(\.address) == b.endpoints.map(\.address)
    }

    /// The first endpoint of a type and direction.
    public func endpoint(type: UInt8, input: Bool) -> UInt8? {
        endpoints.first { $0.type == type && ($0.address & 0x80 != 0) == input }?.address
    }
}

/// A USB device seen on the bus.
public struct USBDeviceInfo: Sendable, Equatable {
    public var bus: Int
    public var address: Int
    public var vendorID: UInt16
    public var productID: UInt16
    public var deviceClass: UInt8
    public var interfaces: [USBInterfaceInfo] = []

    /// USB3 Vision: interface class 0xEF (miscellaneous), subclass 0x05; protocol 0 control, 1 event, 2 stream.
    public static let u3vClass: UInt8 = 0xEF, u3vSubclass: UInt8 = 0x05
    public var isUSB3Vision: Bool {
        interfaces.contains { $0.interfaceClass == Self.u3vClass && $0.subclass == Self.u3vSubclass }
    }
    public func interface(class c: UInt8, subclass s: UInt8, protocol p: UInt8) -> USBInterfaceInfo? {
        interfaces.first { $0.interfaceClass == c && $0.subclass == s && $0.protocolCode == p }
    }
}

/// A libusb context: device discovery, opening, hot-unplug notices, and the event loop that
/// completes asynchronous transfers.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class USBContext: @unchecked Sendable {
    let ctx: OpaquePointer
    private let lock = NSLock()
    private var unplugged: Set<String> = []
    private var hotplugHandle: libusb_hotplug_callback_handle = 0
    private var eventThread: Thread?
    private var eventUsers = 0

    public init() throws {
        var c: OpaquePointer?
        try usbCall("libusb_init", libusb_init(&c))
        guard let c else { throw MoireError(.hardware, "libusb_init returned no context") }
        ctx = c
        if libusb_has_capability(UInt32(LIBUSB_CAP_HAS_HOTPLUG.rawValue)) != 0 {
            let cb: libusb_hotplug_callback_fn = { _, dev, event, user in
                guard let user, let dev else { return 0 }
                let me = Unmanaged<USBContext>.fromOpaque(user).takeUnretainedValue()
                if event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT { me.markUnplugged(USBContext.key(dev)) }
                return 0
            }
            _ = libusb_hotplug_register_callback(
                ctx, Int32(LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT.rawValue), 0, LIBUSB_HOTPLUG_MATCH_ANY,
                LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, cb,
                Unmanaged.passUnretained(self).toOpaque(), &hotplugHandle)
        }
    }

    deinit {
        if hotplugHandle != 0 { libusb_hotplug_deregister_callback(ctx, hotplugHandle) }
        libusb_exit(ctx)
    }

    /// Whether this libusb can announce unplugged devices (otherwise transfers report it).
    public var hasHotplug: Bool { libusb_has_capability(UInt32(LIBUSB_CAP_HAS_HOTPLUG.rawValue)) != 0 }

    static func key(_ dev: OpaquePointer) -> String {
        "\(libusb_get_bus_number(dev)):\(libusb_get_device_address(dev))"
    }
    func markUnplugged(_ key: String) { lock.lock(); unplugged.insert(key); lock.unlock() }
    func isUnplugged(_ key: String) -> Bool { lock.lock(); defer { lock.unlock() }; return unplugged.contains(key) }

    /// Every device libusb can see, with its interfaces (empty on machines without USB access).
    public func devices() throws -> [USBDeviceInfo] {
        try withDeviceList { list in list.compactMap { Self.describe($0) } }
    }

    private func withDeviceList<R>(_ body: ([OpaquePointer]) throws -> R) throws -> R {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = libusb_get_device_list(ctx, &list)
        if n < 0 { try usbCall("libusb_get_device_list", Int32(n)) }
        defer { libusb_free_device_list(list, 1) }
        return try body((0..<Int(n)).compactMap { list?[$0] })
    }

    static func describe(_ dev: OpaquePointer) -> USBDeviceInfo? {
        var d = libusb_device_descriptor()
        guard libusb_get_device_descriptor(dev, &d) == 0 else { return nil }
        var info = USBDeviceInfo(
            bus: Int(libusb_get_bus_number(dev)), address: Int(libusb_get_device_address(dev)),
            vendorID: d.idVendor, productID: d.idProduct, deviceClass: d.bDeviceClass)
        var cfg: UnsafeMutablePointer<libusb_config_descriptor>?
        guard libusb_get_active_config_descriptor(dev, &cfg) == 0, let c = cfg else { return info }
        defer { libusb_free_config_descriptor(c) }
        for i in 0..<Int(c.pointee.bNumInterfaces) {
            let itf = c.pointee.interface[i]
            guard itf.num_altsetting > 0, let alt = itf.altsetting else { continue }
            let a = alt.pointee
            var eps: [(UInt8, UInt8, Int)] = []
            for e in 0..<Int(a.bNumEndpoints) {
                let ep = a.endpoint[e]
                eps.append((ep.bEndpointAddress, ep.bmAttributes & 0x03, Int(ep.wMaxPacketSize)))
            }
            info.interfaces.append(
                USBInterfaceInfo(
                    number: Int(a.bInterfaceNumber), interfaceClass: a.bInterfaceClass, subclass: a.bInterfaceSubClass,
                    protocolCode: a.bInterfaceProtocol,
                    endpoints: eps.map { (address: $0.0, type: $0.1, maxPacket: $0.2) }))
        }
        return info
    }

    /// Opens the first device that `matches`; a clear error naming `what` when there is none.
    public func open(_ what: String, matching matches: (USBDeviceInfo) -> Bool) throws -> USBDevice {
        try withDeviceList { list in
            for dev in list {
                guard let info = Self.describe(dev), matches(info) else { continue }
                var h: OpaquePointer?
                try usbCall("libusb_open", libusb_open(dev, &h), place: what)
                guard let h else { throw MoireError(.hardware, "libusb_open returned no handle", place: what) }
                return USBDevice(context: self, handle: h, info: info, key: Self.key(dev), what: what)
            }
            let seen = list.count
            throw MoireError(
                .hardware,
                "no USB device \(what) found (\(seen) device\(seen == 1 ? "" : "s") on the bus); is it plugged in and powered?",
                place: "usb")
        }
    }

    /// Opens a device by vendor and product id.
    public func open(vendor: UInt16, product: UInt16) throws -> USBDevice {
        try open(String(format: "%04x:%04x", vendor, product)) { $0.vendorID == vendor && $0.productID == product }
    }

    /// Runs libusb's event loop on a thread while any asynchronous reader needs it.
    func retainEvents() {
        lock.lock(); defer { lock.unlock() }
        eventUsers += 1
        guard eventThread == nil else { return }
        let t = Thread { [self] in
            var tv = timeval(tv_sec: 0, tv_usec: 50_000)
            while true {
                lock.lock(); let go = eventUsers > 0; lock.unlock()
                guard go else { break }
                _ = libusb_handle_events_timeout_completed(ctx, &tv, nil)
            }
            lock.lock(); eventThread = nil; lock.unlock()
        }
        t.name = "moire.usb.events"
        eventThread = t
        t.start()
    }

    func releaseEvents() { lock.lock(); eventUsers -= 1; lock.unlock() }

    /// Bytes Linux lets usbfs keep in flight for all devices (`usbfs_memory_mb`, 16 MiB by default).
    public static func usbfsLimitBytes(path: String = "/sys/module/usbcore/parameters/usbfs_memory_mb") -> Int {
        guard let t = try? String(contentsOfFile: path, encoding: .utf8),
            let mb = Int(t.trimmingCharacters(in: .whitespacesAndNewlines))
        else {
            return 16 << 20
        }
        return mb == 0 ? Int.max : mb << 20  // 0: no limit
    }

    /// Transfers of `transferBytes` to keep in flight: `wanted`, capped so all of them stay within half
    /// the usbfs limit (other devices need some), at least 1.
    public static func transfersInFlight(wanted: Int, transferBytes: Int, limitBytes: Int = usbfsLimitBytes()) -> Int {
        let cap = limitBytes == Int.max ? wanted : (limitBytes / 2) / max(1, transferBytes)
        return max(1, min(wanted, cap))
    }
}

/// An open USB device: claimed interfaces, synchronous bulk and interrupt transfers with timeouts.
// Sendable by hand: mutable state guarded by `lock` (NSLock).
public final class USBDevice: @unchecked Sendable {
    let context: USBContext
    let handle: OpaquePointer
    public let info: USBDeviceInfo
    let key: String
    public let what: String
    private var claimed: [Int] = []
    private let lock = NSLock()

    init(context: USBContext, handle: OpaquePointer, info: USBDeviceInfo, key: String, what: String) {
        self.context = context; self.handle = handle; self.info = info; self.key = key; self.what = what
        _ = libusb_set_auto_detach_kernel_driver(handle, 1)
    }

    deinit {
        for i in claimed { _ = libusb_release_interface(handle, Int32(i)) }
        libusb_close(handle)
    }

    /// True once libusb announced the device gone.
    public var isUnplugged: Bool { context.isUnplugged(key) }

    public func claim(interface n: Int) throws {
        try usbCall("claiming interface \(n)", libusb_claim_interface(handle, Int32(n)), place: what)
        lock.lock(); claimed.append(n); lock.unlock()
    }

    private func check() throws {
        if isUnplugged { throw MoireError(.hardware, "device disconnected", place: what) }
    }

    /// Writes all of `data` to an OUT endpoint (bulk or interrupt by `interrupt`).
    public func write(endpoint: UInt8, _ data: [UInt8], timeoutMs: Int, interrupt: Bool = false) throws {
        try check()
        var buf = data
        var done: Int32 = 0
        let rc = buf.withUnsafeMutableBufferPointer { b in
            interrupt
                ? libusb_interrupt_transfer(handle, endpoint, b.baseAddress, Int32(b.count), &done, UInt32(timeoutMs))
                : libusb_bulk_transfer(handle, endpoint, b.baseAddress, Int32(b.count), &done, UInt32(timeoutMs))
        }
        try usbCall(String(format: "write to endpoint 0x%02X", endpoint), rc, place: what)
        guard Int(done) == data.count else {
            throw MoireError(.hardware, "short write: \(done) of \(data.count) bytes", place: what)
        }
    }

    /// One transfer from an IN endpoint, or nil on timeout.
    public func read(endpoint: UInt8, maxBytes: Int, timeoutMs: Int, interrupt: Bool = false) throws -> [UInt8]? {
        try check()
        var buf = [UInt8](repeating: 0, count: maxBytes)
        var done: Int32 = 0
        let rc = buf.withUnsafeMutableBufferPointer { b in
            interrupt
                ? libusb_interrupt_transfer(
                    handle, endpoint, b.baseAddress, Int32(b.count), &done, UInt32(max(1, timeoutMs)))
                : libusb_bulk_transfer(
                    handle, endpoint, b.baseAddress, Int32(b.count), &done, UInt32(max(1, timeoutMs)))
        }
        if rc == LIBUSB_ERROR_TIMEOUT.rawValue && done == 0 { return nil }
        try usbCall(String(format: "read from endpoint 0x%02X", endpoint), rc, place: what)
        return Array(buf[0..<Int(done)])
    }

    /// Clears a stalled endpoint (after an error, as the USB3 Vision standard asks before restarting a stream).
    public func clearHalt(endpoint: UInt8) throws {
        try usbCall(
            String(format: "clearing endpoint 0x%02X", endpoint), libusb_clear_halt(handle, endpoint), place: what)
    }
}

/// Several bulk IN transfers kept in flight on one endpoint (streaming): each completed buffer is
/// queued for `read`, and its transfer resubmitted. The count in flight stays under the usbfs limit.
// Sendable by hand: mutable state guarded by `cond` (NSCondition).
public final class USBAsyncReader: @unchecked Sendable {
    let device: USBDevice
    let endpoint: UInt8
    public let transferBytes: Int
    public let inFlight: Int
    private let cond = NSCondition()
    private var transfers: [UnsafeMutablePointer<libusb_transfer>] = []
    private var buffers: [UnsafeMutablePointer<UInt8>] = []
    private var completed: Deque<[UInt8]> = []
    private var failure: MoireError?
    private var active = 0
    private var stopping = false

    public init(device: USBDevice, endpoint: UInt8, transferBytes: Int, wanted: Int = 8) throws {
        self.device = device; self.endpoint = endpoint; self.transferBytes = transferBytes
        inFlight = USBContext.transfersInFlight(wanted: wanted, transferBytes: transferBytes)
        device.context.retainEvents()
        let cb: libusb_transfer_cb_fn = { t in
            guard let t, let user = t.pointee.user_data else { return }
            Unmanaged<USBAsyncReader>.fromOpaque(user).takeUnretainedValue().completed(t)
        }
        for _ in 0..<inFlight {
            guard let t = libusb_alloc_transfer(0) else {
                throw MoireError(.hardware, "libusb_alloc_transfer failed", place: device.what)
            }
            let b = UnsafeMutablePointer<UInt8>.allocate(capacity: transferBytes)
            libusb_fill_bulk_transfer(
                t, device.handle, endpoint, b, Int32(transferBytes), cb, Unmanaged.passUnretained(self).toOpaque(), 0)
            transfers.append(t); buffers.append(b)
        }
        for t in transfers {
            try usbCall("submitting a stream transfer", libusb_submit_transfer(t), place: device.what)
            cond.lock(); active += 1; cond.unlock()
        }
    }

    func completed(_ t: UnsafeMutablePointer<libusb_transfer>) {
        cond.lock(); defer { cond.unlock() }
        let status = t.pointee.status
        if status == LIBUSB_TRANSFER_COMPLETED {
            completed.append(Array(UnsafeBufferPointer(start: t.pointee.buffer, count: Int(t.pointee.actual_length))))
        } else if status == LIBUSB_TRANSFER_NO_DEVICE {
            failure = MoireError(.hardware, "device disconnected", place: device.what)
        } else if status != LIBUSB_TRANSFER_CANCELLED, status != LIBUSB_TRANSFER_TIMED_OUT {
            failure = MoireError(.hardware, "stream transfer ended with status \(status.rawValue)", place: device.what)
        }
        if !stopping && failure == nil && libusb_submit_transfer(t) == 0 {
            // resubmitted: still in flight
        } else {
            active -= 1
        }
        cond.broadcast()
    }

    /// The next completed transfer, or nil within `timeoutMs`; throws once the device is gone.
    public func read(timeoutMs: Int) throws -> [UInt8]? {
        let end = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        cond.lock(); defer { cond.unlock() }
        while completed.isEmpty {
            if let failure { throw failure }
            if device.isUnplugged { throw MoireError(.hardware, "device disconnected", place: device.what) }
            if !cond.wait(until: end) { return nil }
        }
        return completed.removeFirst()
    }

    /// Cancels every transfer and waits for them to come back.
    public func stop() {
        cond.lock()
        stopping = true
        cond.unlock()
        for t in transfers { _ = libusb_cancel_transfer(t) }
        cond.lock()
        let end = Date().addingTimeInterval(2)
        while active > 0 { if !cond.wait(until: end) { break } }
        let drained = active == 0
        cond.unlock()
        device.context.releaseEvents()
        if drained {
            for t in transfers { libusb_free_transfer(t) }
            for b in buffers { b.deallocate() }
            transfers = []; buffers = []
        }
    }

    deinit { if !transfers.isEmpty { stop() } }
}
