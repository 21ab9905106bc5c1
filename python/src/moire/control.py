"""The daemon's control socket, with the same checks as `moire run` (docs/security.md): an ipc
socket must belong to the pinned user and sit in a directory others cannot write; a tcp daemon
must prove its CURVE key."""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Any, Dict, Optional

import zmq


class DaemonError(RuntimeError):
    """The daemon refused, did not answer, or is not the daemon meant."""


def default_control_endpoint() -> str:
    """`ipc://$XDG_RUNTIME_DIR/moire/control.sock`, else `ipc:///tmp/moire-UID/control.sock` (as moired)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/") and os.path.isdir(runtime):
        return f"ipc://{runtime}/moire/control.sock"
    return f"ipc:///tmp/moire-{os.getuid()}/control.sock"


def default_keys_directory() -> str:
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = config if config.startswith("/") else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "moire", "keys")


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    uid: int
    user: str
    data_root: Optional[str]


@dataclass(frozen=True)
class ControlReply:
    ok: bool
    error: Optional[str]
    state: Optional[str]
    run: Optional[str]
    frames: Optional[int]
    missing: Optional[int]
    planned: Optional[int]
    recording: Optional[str]
    publish: Optional[str]
    published: Optional[int]
    last_seq: Dict[str, int]
    daemon: Optional[DaemonInfo]

    @staticmethod
    def from_json(r: Dict[str, Any]) -> "ControlReply":
        d = r.get("daemon")
        info = DaemonInfo(int(d["pid"]), int(d["uid"]), str(d["user"]), d.get("dataRoot")) if d else None
        return ControlReply(
            ok=bool(r.get("ok")), error=r.get("error"), state=r.get("state"), run=r.get("run"),
            frames=r.get("frames"), missing=r.get("missing"), planned=r.get("planned"),
            recording=r.get("recording"), publish=r.get("publish"), published=r.get("published"),
            last_seq={str(k): int(v) for k, v in (r.get("lastSeq") or {}).items()}, daemon=info)


def _check_ipc(path: str, owner: int) -> None:
    try:
        info = os.lstat(path)
    except OSError as e:
        raise DaemonError(f"{path}: no daemon socket here ({e.strerror})") from e
    if not stat.S_ISSOCK(info.st_mode):
        raise DaemonError(f"{path}: not a socket; refused")
    if info.st_uid != owner:
        raise DaemonError(f"{path}: the socket belongs to uid {info.st_uid}, not to uid {owner}: "
                          "not the daemon you mean; refused")
    directory = os.lstat(os.path.dirname(path) or ".")
    if (directory.st_uid not in (owner, 0)) or directory.st_mode & 0o022:
        raise DaemonError(f"{os.path.dirname(path)}: the socket's directory can be written by others; refused")


class Daemon:
    """A client of moired. `endpoint` defaults to your daemon's socket; `daemon_user` pins a
    daemon shared through a group; a tcp endpoint needs `daemon_key` (the daemon's `.key`) and
    `client_key` (your `.key_secret`), by default in the Moiré keys directory."""

    def __init__(self, endpoint: Optional[str] = None, daemon_user: Optional[str] = None,
                 daemon_key: Optional[str] = None, client_key: Optional[str] = None,
                 timeout: float = 5.0, context: Optional[zmq.Context] = None) -> None:
        self.endpoint = endpoint or default_control_endpoint()
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._curve: Optional[tuple] = None
        if self.endpoint.startswith("ipc://"):
            import pwd
            self._owner = pwd.getpwnam(daemon_user).pw_uid if daemon_user else os.getuid()
        elif self.endpoint.startswith("tcp://"):
            from zmq.auth import load_certificate
            keys = default_keys_directory()
            server_public, _ = load_certificate(daemon_key or os.path.join(keys, "moired.key"))
            client_public, client_secret = load_certificate(client_key or os.path.join(keys, "client.key_secret"))
            if client_secret is None:
                raise DaemonError("the client key file holds no secret key (a NAME.key_secret file is needed)")
            self._curve = (server_public, client_public, client_secret)
        elif not self.endpoint.startswith("inproc://"):
            raise DaemonError(f"{self.endpoint}: a control endpoint is ipc://PATH or tcp://HOST:PORT")

    def request(self, cmd: str, **fields: Any) -> ControlReply:
        """One request; raises DaemonError when nothing answers in time."""
        if self.endpoint.startswith("ipc://"):
            _check_ipc(self.endpoint[len("ipc://"):], self._owner)
        socket = self._context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            if self._curve:
                server_public, client_public, client_secret = self._curve
                socket.curve_serverkey = server_public
                socket.curve_publickey = client_public
                socket.curve_secretkey = client_secret
            socket.connect(self.endpoint)
            socket.send(json.dumps({"cmd": cmd, **{k: v for k, v in fields.items() if v is not None}}).encode())
            if not socket.poll(int(self.timeout * 1000)):
                raise DaemonError(f"{self.endpoint}: no daemon answered within {self.timeout} s")
            reply = ControlReply.from_json(json.loads(socket.recv()))
        finally:
            socket.close(0)
        return reply

    def _ok(self, reply: ControlReply) -> ControlReply:
        if not reply.ok:
            raise DaemonError(reply.error or "the daemon refused")
        return reply

    def ping(self) -> ControlReply:
        return self._ok(self.request("ping"))

    def status(self) -> ControlReply:
        return self._ok(self.request("status"))

    def start(self, protocol_file: str, out: Optional[str] = None, rig: Optional[str] = None,
              overwrite: bool = False) -> ControlReply:
        """Starts a run of `protocol_file` (paths made absolute: the daemon has its own directory)."""
        return self._ok(self.request(
            "start", protocolFile=os.path.abspath(protocol_file), out=os.path.abspath(out) if out else None,
            rig=os.path.abspath(rig) if rig else None, overwrite=True if overwrite else None))

    def stop(self) -> ControlReply:
        return self._ok(self.request("stop"))

    def pause(self) -> ControlReply:
        return self._ok(self.request("pause"))

    def resume(self) -> ControlReply:
        return self._ok(self.request("resume"))
