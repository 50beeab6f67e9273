"""The Node handle that app code gets inside a forked node.

It never imports the supervisor: a node only knows its id, its generation, its health pipe and
the two events the supervisor's signals set. App metrics (`node.metrics`) travel on the same
pipe, written together with the health code (swarmd.metrics.wire).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from swarmd.config.health import MAX_CODE

if TYPE_CHECKING:  # imported at the first use of node.metrics: the supervisor never needs it
    import weakref

    from swarmd.metrics.node import Registry

# Seconds between two sends of a node's changed metrics, with a report or by the flusher thread:
# counters add up in the node meanwhile, so the supervisor parses a node's series this often
# however often it reports (Prometheus scrapes every 15 s or so), and all of it as the node ends.
METRICS_FLUSH_INTERVAL = 5.0


class Heartbeat(Protocol):
    """Where a 0 after a 0 goes instead of the pipe (swarmd.node.heartbeat.BeatWriter)."""

    def beat(self, now: float) -> bool: ...


class Node:
    """What `run(node)` receives: report health, watch for stop and quiet, log."""

    def __init__(self, node_id: int, generation: int, health_fd: int,
                 log: logging.Logger | None = None, supervisor_pid: int | None = None,
                 after_first_report: Callable[[], None] | None = None,
                 beats: Heartbeat | None = None) -> None:
        self.id = node_id
        self.generation = generation
        self.stopping = threading.Event()  # set on SIGTERM: finish up and return
        self.quieting = threading.Event()  # set on SIGTSTP: finish current work, take no new
        self.log = log or logging.getLogger("swarmd.node")
        self._fd = health_fd
        self._lock = threading.Lock()
        self._pending: int | None = None  # worst code not yet written (pipe was full)
        self._supervisor_pid = supervisor_pid if supervisor_pid is not None else os.getppid()
        self._after_first_report = after_first_report  # run once, after the first write
        self._metrics: Registry | None = None  # made at first use: most apps pay nothing
        self._outbox = b""  # the rest of a line a partial write cut: it goes out first
        self.metrics_interval = METRICS_FLUSH_INTERVAL
        self._flushed_at = 0.0  # monotonic time metrics last went out
        self._flusher_stop = threading.Event()  # set when nobody listens any more
        self._beats = beats
        self._sent: int | None = None  # the last code written whole to the pipe

    @property
    def metrics(self) -> Registry:
        """Counters, gauges and histograms, sent every metrics_interval (with a report, else
        by a flusher thread) and as the node ends."""
        if self._metrics is None:
            from swarmd.metrics.node import Registry

            self._metrics = Registry(on_first_metric=self._start_flusher)
        return self._metrics

    def healthy(self) -> None:
        """Report code 0. Call it at least once per `timeouts.report`."""
        self.report(0)

    def unhealthy(self, code: int = 1) -> None:
        """Report a problem, a code from 1 to 255; the code table decides what happens."""
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= MAX_CODE:
            raise ValueError(f"unhealthy() takes a code from 1 to {MAX_CODE}, got {code!r}")
        self.report(code)

    def report(self, code: int) -> None:
        """Write one code to the health pipe without ever blocking the app.

        When the pipe is full the supervisor has not read yet; the worst code is kept and sent
        with the next report, which is what the supervisor would have made of both anyway.
        Metrics changed since the last write go out in the same write, ahead of the code."""
        with self._lock:
            if self._pending is not None:
                code = max(code, self._pending)
            metrics_due = self._metrics is not None and self._metrics.dirty \
                and time.monotonic() - self._flushed_at >= self.metrics_interval
            if code == 0 and self._sent == 0 and self._beats is not None and not self._outbox \
                    and not metrics_due:
                if self._beats.beat(time.monotonic()):
                    self._pending = None  # a 0 that waited for room: the beat says it
                    return  # nothing new for the supervisor: it looks when it needs to
                self._beats = None  # the entry is another node's: the pipe from now on
            if self._outbox or metrics_due:
                self._write(b"%d\n" % code, code)
            else:  # no metrics: the one short write of old, at its old cost
                try:
                    os.write(self._fd, b"%d\n" % code)
                    self._pending, self._sent = None, code
                except BlockingIOError:
                    self._pending = code
                except OSError:  # BrokenPipeError included: the supervisor is gone
                    self._pending = None
                    self.stopping.set()
        if self._after_first_report is not None:
            hook, self._after_first_report = self._after_first_report, None
            hook()

    def flush_metrics(self) -> None:
        """Send the metrics changed since the last write now (and a code still pending), in
        one non-blocking write; what does not fit waits for the next report or flush."""
        with self._lock:
            if self._pending is not None:
                self._write(b"%d\n" % self._pending, self._pending)
            elif self._outbox or (self._metrics is not None and self._metrics.dirty):
                self._write(b"", None)

    def _write(self, line: bytes, code: int | None) -> None:
        """Under the lock: outbox + metrics + `line` in one write; every byte not written is
        kept (the outbox), put back (metrics) or remembered (the code, as _pending)."""
        metrics = self._metrics
        head = self._outbox
        body = metrics.flush() if metrics is not None else b""
        data = head + body + line if head or body else line
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # BrokenPipeError included: the supervisor is gone, nobody listens
            if body:
                metrics.sent(len(body))  # type: ignore[union-attr]
            self._pending, self._outbox = None, b""
            self.stopping.set()
            self._flusher_stop.set()
            return
        if body:  # on their way (the rest, if cut, in the outbox), else owed: due at once
            self._flushed_at = time.monotonic() if written > len(head) else 0.0
        if written == len(data):
            if body:
                metrics.sent(len(body))  # type: ignore[union-attr]
            self._pending, self._outbox = None, b""
            if line:
                self._sent = code
            return
        if written < len(head):
            outbox = head[written:]
            if body:
                metrics.sent(0)  # type: ignore[union-attr]
        else:
            done = written - len(head)
            outbox = metrics.sent(min(done, len(body))) if body else b""  # type: ignore
        done = written - len(head) - len(body)  # bytes of `line` written
        if done <= 0:
            self._pending = code
        else:  # the code's line was cut: its rest goes first, the code is on its way
            outbox += line[done:]
            self._pending, self._sent = None, code
        self._outbox = outbox

    def _start_flusher(self) -> None:
        """At the first metric: a thread that flushes every metrics_interval, so counters
        flow even when the app reports rarely (a report flushes them too)."""
        import weakref

        me = weakref.ref(self)  # a process the app forks must not inherit a held lock
        os.register_at_fork(after_in_child=lambda: _fresh_lock(me))
        threading.Thread(target=self._flush_loop, name="swarmd-metrics", daemon=True).start()

    def _flush_loop(self) -> None:
        """Every metrics_interval since the last send (a report's or its own)."""
        stop = self._flusher_stop
        while not stop.wait(max(0.05, self._flushed_at + self.metrics_interval
                                - time.monotonic())):
            if time.monotonic() - self._flushed_at >= self.metrics_interval:
                self.flush_metrics()

    @property
    def orphaned(self) -> bool:
        """True when the supervisor that forked this node is gone."""
        return os.getppid() != self._supervisor_pid


def _fresh_lock(ref: weakref.ref[Node]) -> None:
    node = ref()
    if node is not None:
        node._lock = threading.Lock()
        node._outbox = b""
