"""Messages between the supervisor and a loader or candidate process.

One JSON object per line over an AF_UNIX stream socket (or, for a throwaway loader, a pipe).
A spawn request carries the new node's three pipe write ends as SCM_RIGHTS; the kernel never
hands over the fds of two sends in one read, and a request's fds arrive with its first byte,
so fds are queued as they come and each request takes the next three.
"""

from __future__ import annotations

import array
import enum
import json
import os
import socket
from collections import deque
from typing import Any

MAX_LINE = 4 << 20  # a config's data is far smaller; anything longer is not ours
READ_CHUNK = 65536
FDS_PER_SPAWN = 3


class Kind(str, enum.Enum):
    """What a message says."""

    CONFIG = "config"  # loader -> supervisor: the validated config, as data
    LOADED = "loaded"  # loader -> supervisor: the app is imported, ready to fork
    FAILED = "failed"  # loader -> supervisor: this version cannot run (problems)
    SPAWN = "spawn"  # supervisor -> candidate: fork a node (+ 3 fds)
    SPAWNED = "spawned"  # candidate -> supervisor: its pid
    SPAWN_FAILED = "spawn_failed"


class Stage(str, enum.Enum):
    """Where a load failed."""

    CONFIG = "config"
    APP = "app"
    SWARMD = "swarmd"


class ChannelClosed(Exception):
    """The other end is gone, or sent what no swarmd sends."""


def encode(kind: Kind, **fields: Any) -> bytes:
    return json.dumps({"t": kind.value, **fields}).encode() + b"\n"


class Channel:
    """One end of the socket: whole messages in, whole messages out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: Kind, fds: tuple[int, ...] = (), **fields: Any) -> None:
        """Send one message; on a non-blocking socket a full buffer is ChannelClosed (the
        other side stopped reading: it is stuck)."""
        data = encode(kind, **fields)
        try:
            if fds:
                sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", fds))])
                data = data[sent:]
            if data:
                self.sock.sendall(data)
        except OSError as exc:
            raise ChannelClosed(f"cannot send: {exc.strerror or exc}") from None

    def receive(self) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
        """Every whole message readable now (blocking sockets: at least one); a spawn request
        comes with its fds. ChannelClosed at EOF or on garbage."""
        messages: list[tuple[dict[str, Any], tuple[int, ...]]] = []
        while not messages:
            if not self._read_some():
                break
            messages = self._take_lines()
            if not self.sock.getblocking():
                break
        return messages

    def _read_some(self) -> bool:
        fds = array.array("i")
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(
                READ_CHUNK, socket.CMSG_SPACE(16 * fds.itemsize))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise ChannelClosed(f"cannot read: {exc.strerror or exc}") from None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        self._fds.extend(fds)
        if not data:
            raise ChannelClosed("closed")
        self._buffer += data
        if len(self._buffer) > MAX_LINE and b"\n" not in self._buffer:
            raise ChannelClosed(f"a message longer than {MAX_LINE} bytes")
        return True

    def _take_lines(self) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
        messages = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return messages
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            try:
                message = json.loads(line)
                Kind(message["t"])
            except (ValueError, KeyError, TypeError):
                raise ChannelClosed(f"garbage: {line[:80]!r}") from None
            fds: tuple[int, ...] = ()
            if message["t"] == Kind.SPAWN.value:
                if len(self._fds) < FDS_PER_SPAWN:
                    raise ChannelClosed("a spawn request without its pipes")
                fds = tuple(self._fds.popleft() for _ in range(FDS_PER_SPAWN))
            messages.append((message, fds))

    def close(self) -> None:
        while self._fds:
            try:
                os.close(self._fds.popleft())
            except OSError:
                pass
        self.sock.close()


def read_messages(fd: int, buffer: bytearray) -> tuple[list[dict[str, Any]], bool]:
    """Whole messages from a throwaway loader's pipe (non-blocking fd), and whether it hit
    EOF; `buffer` keeps a partial line between calls."""
    eof = False
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            break
        if not data:
            eof = True
            break
        buffer += data
        if len(buffer) > MAX_LINE:
            raise ChannelClosed(f"a message longer than {MAX_LINE} bytes")
    messages = []
    while (end := buffer.find(b"\n")) >= 0:
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        try:
            message = json.loads(line)
            Kind(message["t"])
        except (ValueError, KeyError, TypeError):
            raise ChannelClosed(f"garbage: {line[:80]!r}") from None
        messages.append(message)
    return messages, eof
