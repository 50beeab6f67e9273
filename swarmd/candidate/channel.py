"""The socket between the supervisor and a deploy's candidate: whole messages (wire.py) in
and out, and the pipes of a node to fork with each spawn request.

A message may carry fds (SCM_RIGHTS): a spawn request the new node's three pipe write ends, a
first start's new node its three read ends. The message says how many ("fds"); the kernel never
hands over the fds of two sends in one read, and a message's fds arrive with its first byte, so
fds are queued as they come and each message takes the next ones it counts.
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections import deque
from typing import Any

from swarmd.candidate.wire import MAX_LINE, READ_CHUNK, ChannelClosed, ChannelEnded, Kind, encode

MAX_FDS = 16  # per message; a node brings three


class Channel:
    """One end of the socket: whole messages in, whole messages out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, kind: Kind, fds: tuple[int, ...] = (), **fields: Any) -> None:
        """Send one message (with `fds`); on a non-blocking socket a full buffer is
        ChannelClosed (the other side stopped reading: it is stuck)."""
        if fds:
            fields["fds"] = len(fds)
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
        """Every whole message readable now (blocking sockets: at least one), with the fds it
        brought. ChannelClosed at EOF or on garbage."""
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
            raise ChannelEnded("closed")
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
            count = message.get("fds", 0)
            if not isinstance(count, int) or not 0 <= count <= MAX_FDS:
                raise ChannelClosed(f"garbage: {line[:80]!r}")
            if len(self._fds) < count:
                raise ChannelClosed(f"a {message['t']} message without its {count} fd(s)")
            messages.append((message, tuple(self._fds.popleft() for _ in range(count))))

    def close(self) -> None:
        while self._fds:
            try:
                os.close(self._fds.popleft())
            except OSError:
                pass
        self.sock.close()
