"""fd -> callback over one epoll: the supervisor's wake-up path.

At rest a supervisor of N nodes wakes N times a second for one short report each, and what such
a wake-up costs is mostly the memory it touches while its caches are cold. `selectors` builds a
key object and a list entry per ready fd and looks keys up through two Python frames; here the
ready fds go from `epoll.poll()` straight to their callbacks (a bound method or a
functools.partial, no lambda frame). Measured on a 64-node fleet at rest: the supervisor's CPU
per wake-up went from ~78 us to ~50 us together with the health fast path (bench/README.md).

Batched fds (a running node's health and output pipes) sit in a second epoll whose own fd the
first one watches: when any of them is ready, all that are ready are served in one go, then the
group rests for BATCH_INTERVAL, so a fleet at rest wakes the supervisor a bounded number of
times a second whatever its size, while a death (pidfd), a signal, a client or a deadline still
wakes it at once.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = int | HasFileno
READ = select.EPOLLIN
WRITE = select.EPOLLOUT


# Seconds between two rounds of batched fds: the wake-ups of a fleet at rest stay near 22/s
# whatever its size, and a report is read at most this late, which is what a hung node's
# TERM may come after its deadline (bench/run.py holds that under 50 ms).
BATCH_INTERVAL = 0.045


def _fd(file: FileLike) -> int:
    return file if isinstance(file, int) else file.fileno()


EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT


class Poller:
    """Level-triggered readiness, for reading unless asked otherwise; every callback must
    tolerate a spurious call (all of ours are non-blocking reads, writes, accepts or WNOHANG
    waits), and is not told which readiness woke it: it tries what it has to do."""

    def __init__(self, batch_interval: float = BATCH_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._events: dict[int, int] = {}  # fds registered with more or other than EPOLLIN
        # fds unregistered since the last poll: an event already fetched for such an fd
        # belongs to the closed file, never to a new one that got the same number
        self._stale: set[int] = set()
        self.batch_interval = batch_interval
        self._clock = clock
        self._group: select.epoll | None = None  # the batched fds' epoll, made at first use
        self._batched: set[int] = set()
        self._group_opens = 0.0  # the group may be served from this time on
        self._group_resting = False  # ready, but served only once it opens
        self._between: Callable[[], None] | None = None
        self.batches = 0  # rounds of batched fds served (the bench counts them)

    def register(self, file: FileLike, callback: Callable[[], None],
                 events: int = EPOLLIN, batched: bool = False) -> None:
        """Call `callback` while the fd is ready for `events` (EPOLLIN, EPOLLOUT or both); a
        hang-up or error is always reported too. `batched`: served with the others of the
        group, at most once per batch_interval (see batch())."""
        fd = _fd(file)
        if batched:
            self._group_epoll().register(fd, events)
            self._batched.add(fd)
        else:
            self._epoll.register(fd, events)
        self._callbacks[fd] = callback
        if events != EPOLLIN:
            self._events[fd] = events

    def batch(self, file: FileLike) -> None:
        """Move a registered fd into the batched group (a node's pipes once it runs: what it
        says can wait a few hundredths of a second; its death, on its pidfd, cannot)."""
        fd = _fd(file)
        if fd not in self._callbacks or fd in self._batched:
            return
        events = self._events.get(fd, EPOLLIN)
        self._epoll.unregister(fd)
        self._group_epoll().register(fd, events)
        self._batched.add(fd)

    def _group_epoll(self) -> select.epoll:
        if self._group is None:
            self._group = select.epoll()
            self._epoll.register(self._group.fileno(), EPOLLIN)
            self._callbacks[self._group.fileno()] = self._serve_group
        return self._group

    def _epoll_of(self, fd: int) -> select.epoll:
        if fd in self._batched:
            assert self._group is not None
            return self._group
        return self._epoll

    def _serve_group(self) -> None:
        """Some batched fd is ready: serve every ready one now, or once the group opens."""
        assert self._group is not None
        now = self._clock()
        if now < self._group_opens:
            if not self._group_resting:
                self._group_resting = True
                self._epoll.modify(self._group.fileno(), 0)
            return
        self._group_opens = now + self.batch_interval
        self.batches += 1
        ready = self._group.poll(0)
        if len(ready) > 1:  # a busy group: rest from now on, so the next round's first fd
            self._group_resting = True  # does not wake the loop only to be put off
            self._epoll.modify(self._group.fileno(), 0)
        self._dispatch(ready, self._between)

    def modify(self, file: FileLike, events: int) -> None:
        """Wait for other readiness (a writer with something queued adds EPOLLOUT, and drops
        it once drained: a writable fd is ready all the time)."""
        fd = _fd(file)
        if fd in self._callbacks:
            self._epoll_of(fd).modify(fd, events)
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
            epoll = self._epoll_of(fd)
            self._batched.discard(fd)
            try:
                epoll.unregister(fd)
            except OSError:  # already closed: epoll dropped it by itself
                pass

    def pause(self, file: FileLike) -> None:
        """Stay registered (fds() still lists it) but report nothing until resume(); a hang-up
        or error of the fd is still reported (epoll always does)."""
        fd = _fd(file)
        if fd in self._callbacks:
            self._epoll_of(fd).modify(fd, 0)

    def resume(self, file: FileLike) -> None:
        """Report again what the fd was registered (or last modified) for."""
        fd = _fd(file)
        if fd in self._callbacks:
            self._epoll_of(fd).modify(fd, self._events.get(fd, EPOLLIN))

    def fds(self) -> list[int]:
        """Every registered fd (the batched group's epoll included)."""
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
        if self._group_resting:  # the group waits to open: not a moment longer
            rest = self._group_opens - self._clock()
            if rest <= 0:
                self._group_resting = False
                assert self._group is not None
                self._epoll.modify(self._group.fileno(), EPOLLIN)
            elif timeout is None or rest < timeout:
                timeout = rest
        self._between = between
        ready = self._epoll.poll(-1 if timeout is None else timeout)
        self._dispatch(ready, between)
        return len(ready)

    def _dispatch(self, ready: list[tuple[int, int]],
                  between: Callable[[], None] | None) -> None:
        """The callback of each ready fd (none of one unregistered meanwhile), `between` run
        between two of them."""
        callbacks, stale = self._callbacks, self._stale
        first = True
        for fd, _ in ready:
            if first:
                first = False
            elif between is not None:
                between()
            callback = callbacks.get(fd)
            if callback is not None and fd not in stale:
                callback()

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        self._callbacks.clear()
        self._events.clear()
        self._batched.clear()
        if self._group is not None:
            self._group.close()
        self._epoll.close()
