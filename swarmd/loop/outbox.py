"""Bytes on their way to an fd that may not take them now: a bounded queue, written as the fd
takes it, never waited for.

The supervisor's log lines go to stderr or the journal, both read by someone else at their own
pace; a write that waits for them stops the loop (the watchdog, every node). An Outbox writes
what the fd takes at once, keeps the rest up to `limit` bytes, and writes it when the poller
says the fd is writable again (it registers the fd for write-readiness only while something
waits, so a drained outbox costs the loop nothing). What does not fit is dropped and counted
(an item alone in the queue always fits: an entry larger than the limit still goes out),
and once the queue drains a note saying how many were dropped goes out. Ordinary items may fill
`limit` less a reserve kept for important ones (the supervisor's own entries, over node output).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import time
from collections import deque
from collections.abc import Callable

from swarmd.loop.poller import EPOLLOUT, Poller

RESERVE = 0.25  # of the limit, kept for important items
CHUNK = 65536  # bytes joined into one write of a stream


class Outbox:
    """Subclasses say how an item is written (`_write`); this class decides when."""

    stream = False  # True: items are bytes of one stream (joined, partially written)

    def __init__(self, limit: int, note: Callable[[int], bytes] | None = None) -> None:
        self.limit = limit
        self._soft = limit - int(limit * RESERVE)
        self._note = note  # the item that tells how many were dropped
        self._items: deque[bytes] = deque()
        self._size = 0
        self._noting: bytes | None = None  # the note queued now, and the drops it tells
        self._noting_count = 0
        self.dropped = 0  # not told by a note yet
        self.dropped_total = 0
        self.broken: OSError | None = None  # the fd failed for good: every item is dropped
        self._poller: Poller | None = None
        self._watching: int | None = None  # the fd registered for write-readiness

    # ---- what a subclass provides --------------------------------------------------------

    def fileno(self) -> int | None:
        """The fd to wait on for write-readiness (None: never waits, or nothing to write to)."""
        raise NotImplementedError

    def _write(self, data: bytes) -> int:
        """Write without waiting; return how many bytes went, raise BlockingIOError when none
        can, OSError when the fd failed."""
        raise NotImplementedError

    def _failed(self, exc: OSError) -> bool:
        """An error of _write: True to drop the item and go on, False if the fd is broken."""
        return False

    # ---- the sink's side -----------------------------------------------------------------

    def attach(self, poller: Poller) -> None:
        """From now on a blocked write waits for write-readiness in this poller (without one,
        every put tries to write what is queued)."""
        self._poller = poller

    def put(self, item: bytes, important: bool = False) -> bool:
        """Queue `item` and write what the fd takes; False when there was no room for it
        (or the fd is broken): it is dropped and counted."""
        if self.broken is not None:
            self.dropped += 1
            self.dropped_total += 1
            return False
        queued = True
        if self._items and self._size + len(item) > (self.limit if important else self._soft):
            self.dropped += 1  # an item alone in the queue always fits
            self.dropped_total += 1
            queued = False
        else:
            self._items.append(item)
            self._size += len(item)
        if self._watching is None:  # else the poller calls flush when the fd takes more
            self.flush()
        return queued

    def pending(self) -> int:
        """Bytes queued."""
        return self._size

    def flush(self) -> None:
        """Write what the fd takes now (the poller's callback, and after each put)."""
        failed = False
        while self._items:
            data = self._next()
            try:
                sent = self._write(data)
            except (BlockingIOError, InterruptedError):
                self._watch()
                return
            except OSError as exc:
                if not self._failed(exc):
                    self._break(exc)
                    return
                self._drop_head()  # this item cannot go: drop it, go on
                failed = True
                continue
            self._consume(sent)
            if (not self._items and self.dropped and self._note is not None
                    and self._noting is None and not failed):
                note = self._note(self.dropped)
                self._noting, self._noting_count = note, self.dropped
                self._items.append(note)
                self._size += len(note)
        self._unwatch()

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the queue to go out: at exit, when the loop is
        over and the last entries (swarmd.stopped) would otherwise be lost."""
        deadline = time.monotonic() + timeout
        fd = self.fileno()
        waiter = select.poll()
        if fd is not None:
            waiter.register(fd, select.POLLOUT)
        while self._items and self.broken is None:
            left = deadline - time.monotonic()
            if left <= 0 or fd is None:
                return
            waiter.poll(left * 1000)
            self.flush()

    def close(self) -> None:
        self._unwatch()
        self._poller = None

    # ---- inside --------------------------------------------------------------------------

    def _next(self) -> bytes:
        if not self.stream or len(self._items) == 1:
            return self._items[0]
        parts: list[bytes] = []
        size = 0
        for item in self._items:
            if parts and size + len(item) > CHUNK:
                break
            parts.append(item)
            size += len(item)
        return b"".join(parts)

    def _consume(self, sent: int) -> None:
        self._size -= sent
        while sent:
            head = self._items[0]
            if len(head) <= sent:
                self._items.popleft()
                sent -= len(head)
                if head is self._noting:  # the note is out: those drops are told
                    self.dropped -= self._noting_count
                    self._noting = None
            else:  # a partial write of a stream: the rest stays first
                self._items[0] = head[sent:]
                if head is self._noting:
                    self._noting = self._items[0]
                sent = 0

    def _drop_head(self) -> None:
        head = self._items.popleft()
        self._size -= len(head)
        if head is self._noting:  # its count stays to be told by the next note
            self._noting = None
        else:
            self.dropped += 1
            self.dropped_total += 1

    def _break(self, exc: OSError) -> None:
        self.broken = exc
        count = len(self._items) - (self._noting is not None)
        self.dropped += count
        self.dropped_total += count
        self._noting = None
        self._items.clear()
        self._size = 0
        self._unwatch()

    def _watch(self) -> None:
        fd = self.fileno()
        if self._poller is None or fd is None or self._watching is not None:
            return
        try:
            self._poller.register(fd, self.flush, events=EPOLLOUT)
        except OSError as exc:  # EPERM: a regular file, which never makes a writer wait
            if exc.errno != errno.EPERM:
                raise
            return
        self._watching = fd

    def _unwatch(self) -> None:
        if self._watching is not None and self._poller is not None:
            self._poller.unregister(self._watching)
        self._watching = None


class StreamOutbox(Outbox):
    """An Outbox writing one byte stream to a non-blocking fd (a pipe, a terminal, a socket)."""

    stream = True

    def __init__(self, fd: int, limit: int, note: Callable[[int], bytes] | None = None,
                 *, owned: bool = False, is_socket: bool = False) -> None:
        super().__init__(limit, note)
        self.fd = fd
        self._owned = owned  # our own fd (a private reopen or dup): closed with the outbox
        self._socket = socket.socket(fileno=fd) if is_socket else None

    def fileno(self) -> int | None:
        return self.fd if self.fd >= 0 else None

    def _write(self, data: bytes) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        return os.write(self.fd, data)

    def close(self) -> None:
        super().close()
        if self._owned and self.fd >= 0:
            if self._socket is not None:
                self._socket.close()
            else:
                os.close(self.fd)
        elif self._socket is not None:
            self._socket.detach()
        self.fd = -1

    @classmethod
    def for_fd(cls, fd: int, limit: int,
               note: Callable[[int], bytes] | None = None) -> StreamOutbox:
        """An outbox that never blocks on `fd` (stderr), without changing `fd` itself: a pipe
        or a terminal is opened again, privately, with O_NONBLOCK (setting it on the shared
        one would hand EAGAIN to the shell that shares the terminal); a socket is sent to with
        MSG_DONTWAIT; a regular file or /dev/null is written as it is (it never waits)."""
        mode = os.fstat(fd).st_mode
        if stat.S_ISSOCK(mode):
            return cls(os.dup(fd), limit, note, owned=True, is_socket=True)
        if stat.S_ISFIFO(mode) or (stat.S_ISCHR(mode) and os.isatty(fd)):
            try:
                private = os.open(f"/proc/self/fd/{fd}",
                                  os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            except OSError:  # no /proc, or a FIFO without reader: make the shared one
                os.set_blocking(fd, False)  # non-blocking rather than ever wait on it
                return cls(fd, limit, note)
            return cls(private, limit, note, owned=True)
        return cls(fd, limit, note)
