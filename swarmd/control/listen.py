"""The listening sockets of the control server, and what it does with a connection it will
not serve: control.sock with mode 0600 in the runtime directory, each request judged by the
peer's credentials too (SO_PEERCRED: see Access), status.sock with mode 0666 and read-only; a
stale socket of a killed supervisor removed, a spare fd held for when the fd table is full."""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import socket
import struct

from swarmd.control.base import ControlError

MAX_SOCKET_PATH = 107  # bytes of sun_path, without its NUL


class Access(enum.Enum):
    FULL = "full"  # root or the service's own user: every command
    READ = "read"  # any other local user: status only


def peer_access(conn: socket.socket) -> Access:
    """What changes the fleet is root's and the service user's; status is read-only, so a peer
    the socket's mode let in otherwise (an operator's chmod) may ask for it. (Groups cannot
    decide it: under the unit's PrivateUsers=yes every other user and group reads as nobody.)"""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return Access.FULL if uid in (0, os.getuid()) else Access.READ


def listen(directory: str, path: str, mode: int = 0o600) -> socket.socket:
    """A listening socket at `path` with `mode`; OSError with a readable strerror when it
    cannot be."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise OSError(errno.ENAMETOOLONG, f"the socket path {path} is longer than the "
                                          f"{MAX_SOCKET_PATH} bytes a unix socket can have")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)  # control.sock: 0600, DESIGN.md's contract
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_stale(path: str) -> None:
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a supervisor that was killed
        return
    finally:
        probe.close()
    raise ControlError(f"another swarmd is already running with control socket "
                       f"{path}; stop it, or give this one its own "
                       f"RUNTIME_DIRECTORY")


def open_spare() -> int | None:
    """An fd held in reserve: when accept() finds the fd table full, closing it makes room to
    take the waiting connection and close it (else it would wake the loop forever)."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def refuse(conn: socket.socket, error: str) -> None:
    """One short error line to a connection that will not be served (it fits the empty
    socket buffer, so the non-blocking send is whole), then close."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(b'{"ok": false, "error": "' + error.encode() + b'"}\n')
    conn.close()
