"""fd -> callback over one epoll: the supervisor's wake-up path.

At rest a supervisor of N nodes wakes N times a second for one short report each, and what such
a wake-up costs is mostly the memory it touches while its caches are cold. `selectors` builds a
key object and a list entry per ready fd and looks keys up through two Python frames; here the
ready fds go from `epoll.poll()` straight to their callbacks (a bound method or a
functools.partial, no lambda frame). Measured on a 64-node fleet at rest: the supervisor's CPU
per wake-up went from ~78 us to ~50 us together with the health fast path (bench/README.md).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = int | HasFileno
READ = select.EPOLLIN
WRITE = select.EPOLLOUT


def _fd(file: FileLike) -> int:
    return file if isinstance(file, int) else file.fileno()


EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT


class Poller:
    """Level-triggered readiness, for reading unless asked otherwise; every callback must
    tolerate a spurious call (all of ours are non-blocking reads, writes, accepts or WNOHANG
    waits), and is not told which readiness woke it: it tries what it has to do."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._events: dict[int, int] = {}  # fds registered with more or other than EPOLLIN
        # fds unregistered since the last poll: an event already fetched for such an fd
        # belongs to the closed file, never to a new one that got the same number
        self._stale: set[int] = set()

    def register(self, file: FileLike, callback: Callable[[], None],
                 events: int = EPOLLIN) -> None:
        """Call `callback` while the fd is ready for `events` (EPOLLIN, EPOLLOUT or both); a
        hang-up or error is always reported too."""
        fd = _fd(file)
        self._epoll.register(fd, events)
        self._callbacks[fd] = callback
        if events != EPOLLIN:
            self._events[fd] = events

    def modify(self, file: FileLike, events: int) -> None:
        """Wait for other readiness (a writer with something queued adds EPOLLOUT, and drops
        it once drained: a writable fd is ready all the time)."""
        fd = _fd(file)
        if fd in self._callbacks:
            self._epoll.modify(fd, events)
            if events == EPOLLIN:
                self._events.pop(fd, None)
            else:
                self._events[fd] = events

    def unregister(self, file: FileLike) -> None:
        """Forget an fd (before it is closed); unknown fds are ignored."""
        fd = _fd(file)
        self._events.pop(fd, None)
        if self._callbacks.pop(fd, None) is not None:
            self._events.pop(fd, None)
            self._stale.add(fd)
            try:
                self._epoll.unregister(fd)
            except OSError:  # already closed: epoll dropped it by itself
                pass

    def pause(self, file: FileLike) -> None:
        """Stay registered (fds() still lists it) but report nothing until resume(); a hang-up
        or error of the fd is still reported (epoll always does)."""
        fd = _fd(file)
        if fd in self._callbacks:
            self._epoll.modify(fd, 0)

    def resume(self, file: FileLike) -> None:
        """Report again what the fd was registered (or last modified) for."""
        fd = _fd(file)
        if fd in self._callbacks:
            self._epoll.modify(fd, self._events.get(fd, EPOLLIN))

    def fds(self) -> list[int]:
        """Every registered fd."""
        return list(self._callbacks)

    def __contains__(self, file: FileLike) -> bool:
        return _fd(file) in self._callbacks

    def __len__(self) -> int:
        return len(self._callbacks)

    def poll(self, timeout: float | None,
             between: Callable[[], None] | None = None) -> int:
        """Wait up to `timeout` seconds (None: forever), then run the callback of every ready
        fd; `between` runs between two callbacks (the loop's overdue timers, so a long batch
        of reads never holds a deadline). Returns how many fds were ready."""
        stale = self._stale
        if stale:
            stale.clear()
        ready = self._epoll.poll(-1 if timeout is None else timeout)
        callbacks = self._callbacks
        first = True
        for fd, _ in ready:
            if first:
                first = False
            elif between is not None:
                between()
            callback = callbacks.get(fd)
            if callback is not None and fd not in stale:
                callback()
        return len(ready)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        self._callbacks.clear()
        self._events.clear()
        self._epoll.close()
