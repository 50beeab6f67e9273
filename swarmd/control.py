"""The control socket: a server in the supervisor's loop, a client for status/reload/quiet.

One JSON request line per connection, one JSON reply line. The socket lives in the runtime
directory with mode 0600 and only answers peers with the supervisor's uid or root
(SO_PEERCRED), since `reload` and `quiet` change what the service does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

from swarmd.loop.poller import Poller

SOCKET_NAME = "control.sock"
# json is imported where a request is read or written, not at start: a supervisor that is never
# asked anything never loads it (one module less in every node's fork, ~1 ms less per start)
MAX_REQUEST = 4096
REPLY_TIMEOUT = 1.0  # a client that does not take its reply within this is dropped


class ControlError(Exception):
    """The running supervisor cannot be reached or refused the request."""


def runtime_dir(instance: str | None = None, environ: dict[str, str] | None = None) -> str:
    """$RUNTIME_DIRECTORY (set by systemd), else /run/swarmd or /run/swarmd-<instance>
    ($XDG_RUNTIME_DIR/swarmd for a user who is not root)."""
    env = os.environ if environ is None else environ
    name = f"swarmd-{instance}" if instance else "swarmd"
    value = env.get("RUNTIME_DIRECTORY", "")
    if value and not instance:
        return value.split(":")[0]
    if os.geteuid() != 0 and env.get("XDG_RUNTIME_DIR"):  # a user's foreground run
        return os.path.join(env["XDG_RUNTIME_DIR"], name)
    return f"/run/{name}"


def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET_NAME)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class Reply:
    """Answers one client's request; `fd` names the client across a re-exec."""

    __slots__ = ("server", "fd")

    def __init__(self, server: ControlServer, fd: int) -> None:
        self.server = server
        self.fd = fd

    def __call__(self, reply: dict[str, Any]) -> None:
        self.server._reply(self.fd, reply, registered=False)


Handler = Callable[[dict[str, Any], Reply], None]


class ControlServer:
    """Accepts requests inside the supervisor's loop; never blocks the loop for long."""

    def __init__(self, directory: str, handler: Handler, *,
                 adopt: dict[str, Any] | None = None) -> None:
        """Bind the socket in `directory`, or (adopt) take over the listening socket and the
        clients waiting for an answer that `export` described, across a re-exec."""
        self.path = socket_path(directory)
        self.handler = handler
        self.clients: dict[int, socket.socket] = {}
        self._buffers: dict[int, bytes] = {}
        self._poller: Poller | None = None
        if adopt is not None:
            self.sock = socket.socket(fileno=int(adopt["listen_fd"]))
            self.sock.set_inheritable(False)
            for fd in adopt.get("waiting", []):
                conn = socket.socket(fileno=int(fd))
                conn.set_inheritable(False)
                self.clients[conn.fileno()] = conn
            return
        os.makedirs(directory, mode=0o755, exist_ok=True)
        self._remove_stale()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self.sock.listen(16)
        self.sock.setblocking(False)

    def export(self, waiting: list[int]) -> dict[str, Any]:
        """What a re-executed supervisor needs to go on serving: the listening socket and the
        clients in `waiting` (their requests are read; they wait for an answer), made
        inheritable; every other client is dropped."""
        for fd in list(self.clients):
            if fd not in waiting:
                self._drop(fd)
        if self._poller is not None:
            self._poller.unregister(self.sock)
        self.sock.set_inheritable(True)
        kept = []
        for fd in waiting:
            conn = self.clients.get(fd)
            if conn is not None:
                conn.set_inheritable(True)
                kept.append(fd)
        return {"listen_fd": self.sock.fileno(), "waiting": kept}

    def reply_to(self, fd: int) -> Reply:
        return Reply(self, fd)

    def _remove_stale(self) -> None:
        if not os.path.exists(self.path):
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: left by a supervisor that was killed
            return
        finally:
            probe.close()
        raise ControlError(f"another swarmd is already running with control socket "
                           f"{self.path}; stop it, or give this one its own "
                           f"RUNTIME_DIRECTORY")

    def fds(self) -> list[int]:
        return [self.sock.fileno(), *self.clients]

    def register(self, poller: Poller) -> None:
        self._poller = poller
        poller.register(self.sock, self._accept)

    def _accept(self) -> None:
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            if _peer_uid(conn) not in (0, os.getuid()):
                with contextlib.suppress(OSError):
                    conn.sendall(b'{"ok": false, "error": "permission denied"}\n')
                conn.close()
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            self.clients[fd] = conn
            self._buffers[fd] = b""
            assert self._poller is not None
            self._poller.register(conn, partial(self._read, fd))

    def _read(self, fd: int) -> None:
        conn = self.clients.get(fd)
        if conn is None:
            return
        try:
            data = conn.recv(MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        buffer = self._buffers[fd] + data
        if b"\n" not in buffer:
            if len(buffer) >= MAX_REQUEST:
                self._reply(fd, {"ok": False, "error": "request too long"})
            else:
                self._buffers[fd] = buffer
            return
        assert self._poller is not None
        self._poller.unregister(conn)  # one request per connection
        line = buffer.split(b"\n", 1)[0]
        try:
            import json

            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._reply(fd, {"ok": False, "error": f"bad request: {exc}"}, registered=False)
            return
        self.handler(request, Reply(self, fd))

    def _reply(self, fd: int, reply: dict[str, Any], registered: bool = True) -> None:
        conn = self.clients.get(fd)
        if conn is None:
            return
        if registered and self._poller is not None:
            self._poller.unregister(conn)
        try:
            conn.settimeout(REPLY_TIMEOUT)
            import json

            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        self._close(fd)

    def _drop(self, fd: int) -> None:
        conn = self.clients.get(fd)
        if conn is not None and self._poller is not None:
            self._poller.unregister(conn)
        self._close(fd)

    def _close(self, fd: int) -> None:
        conn = self.clients.pop(fd, None)
        self._buffers.pop(fd, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for fd in list(self.clients):
            self._close(fd)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def request(directory: str, payload: dict[str, Any], timeout: float | None = 10.0
            ) -> dict[str, Any]:
    """Send one request to the running supervisor and wait for its reply."""
    import json

    path = socket_path(directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no swarmd is running here ({path} does not exist); "
                               f"start it with systemctl start swarmd") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as the service's user "
                               f"or root") from None
        except OSError as exc:
            raise ControlError(f"cannot reach swarmd at {path}: {exc.strerror}") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise ControlError(f"swarmd did not answer within {timeout}s") from None
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise ControlError("swarmd closed the connection without an answer")
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"unreadable answer from swarmd: {data[:80]!r}") from None
    return reply
