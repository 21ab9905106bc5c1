import Foundation

/// systemd's service readiness protocol (sd_notify(3)): state lines such as `READY=1` sent as one
/// datagram to the unix socket that `$NOTIFY_SOCKET` names (a leading `@` is the abstract
/// namespace). Without the variable (not started by systemd with `Type=notify`) nothing is sent.
/// Written here rather than linking libsystemd for one datagram; the protocol is stable and
/// documented as such.
enum SystemdNotify {
    /// Sends `state` (newline-separated `KEY=value` lines); true when systemd's socket took it.
    @discardableResult
    static func send(_ state: String) -> Bool {
        guard let path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var name = Array(path.utf8)
        if name.first == UInt8(ascii: "@") { name[0] = 0 }
        guard name.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                sendto(descriptor, message, message.count, 0, socketAddress, length)
            }
        }
        return sent == message.count
    }
}
