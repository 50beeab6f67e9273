"""The journal's native protocol, spoken without ever waiting for journald.

systemd-python's sendv blocks while journald's socket queue is full (a slow or busy journald,
net.unix.max_dgram_qlen datagrams), and the supervisor's loop must not. So the supervisor sends
its entries itself (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram per entry to
/run/systemd/journal/socket with MSG_DONTWAIT, `NAME=value\\n` per field, or `NAME\\n`, the
value's length as 64-bit little endian, the value and `\\n` when the value holds a newline; an
entry too large for a datagram goes in a sealed memfd passed with SCM_RIGHTS. What journald
does not take at once waits in a bounded Outbox, sent when the socket is writable again.
(Nodes keep systemd-python: a node may block on its own log.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable

from swarmd.loop.outbox import Outbox

JOURNAL_SOCKET = "/run/systemd/journal/socket"
QUEUE_LIMIT = 1 << 20  # bytes of entries waiting for journald (~3000 entries)
RECONNECT_EVERY = 1.0  # seconds between attempts to reach a journald that is not there
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def encode_entry(fields: Iterable[tuple[str, object]]) -> bytes:
    """One entry in the native format; None values are left out, a value with a newline (or
    a NUL) is sent length-prefixed, so any text a node wrote arrives as it was."""
    parts: list[bytes] = []
    for name, value in fields:
        if value is None:
            continue
        data = str(value).encode("utf-8", "backslashreplace")
        if b"\n" in data or b"\0" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


class JournalSender(Outbox):
    """Entries to journald over a connected datagram socket: never waits (see module doc).

    Connected, so that the poller's write-readiness means journald's queue has room again."""

    def __init__(self, path: str = JOURNAL_SOCKET, limit: int = QUEUE_LIMIT,
                 note: Callable[[int], bytes] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limit, note)
        self.path = path
        self._clock = clock
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self._connected = False
        self._next_connect = 0.0
        self._connect()

    def fileno(self) -> int | None:
        return self.sock.fileno() if self._connected else None

    def _connect(self) -> bool:
        now = self._clock()
        if now < self._next_connect:
            return False
        try:
            self.sock.connect(self.path)
        except (BlockingIOError, InterruptedError):  # a full queue; it is connected anyway
            pass
        except OSError:
            self._next_connect = now + RECONNECT_EVERY
            return False
        self._connected = True
        return True

    def _write(self, data: bytes) -> int:
        if not self._connected and not self._connect():
            raise ConnectionRefusedError(errno.ECONNREFUSED, "journald is not there")
        try:
            self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)
        return len(data)

    def _send_memfd(self, data: bytes) -> None:
        """An entry too large for a datagram: its bytes in a sealed memfd, the fd passed."""
        fd = os.memfd_create("swarmd-journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
                              socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        finally:
            os.close(fd)

    def _failed(self, exc: OSError) -> bool:
        """journald gone (restarted without its socket, not started): this entry is dropped
        and counted, the next one tries to reach it again (at most once per RECONNECT_EVERY)."""
        gone = (errno.ECONNREFUSED, errno.ENOTCONN, errno.ENOENT, errno.ECONNRESET)
        if exc.errno in gone and self._connected:  # a new socket for the next connect
            self._connected = False
            self._unwatch()
            self.sock.close()
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)
        return exc.errno != errno.EBADF  # else (EMFILE for a memfd, ENOMEM): this one only

    def close(self) -> None:
        super().close()
        self.sock.close()
        self._connected = False
