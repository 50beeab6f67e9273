"""`metrics.textfile`: the exposition as a file for node_exporter's textfile collector.

A write to a regular file can block for as long as its disk likes (O_NONBLOCK means nothing
there), so the loop never writes the file itself: it renders the text (the same work as a
scrape) and forks a writer that writes a temporary file in the same directory and renames it
over the old one (node_exporter sees the old file or the new one, never half of one; it reads
only *.prom names, and the temporary one ends in .tmp). The writer's pidfd is in the loop, so
its end is noticed and reaped like a node's. A writer still busy at the next interval is left
alone (that round is skipped); one busy longer than STUCK is killed and reported. A thread
would be cheaper to start, but a supervisor that forks nodes must stay single-threaded (a fork
copies a lock held by another thread in its held state; Python 3.12 warns on every such fork).
bench/metrics_textfile.py measures what a fork costs the loop.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable

from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timer, Timers

TEXTFILE_INTERVAL = 15.0  # node_exporter is typically scraped every 15 s
STUCK = 60.0  # seconds a writer may take before it is killed (a hung NFS mount, say)
REMOVE_WAIT_MS = 5000  # the remover waits this long for a killed writer to be gone


def temporary_path(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.swarmd.tmp")


def _write_file(path: str, data: bytes) -> None:
    """In the writer: the new file next to the old one, then one rename over it."""
    tmp = temporary_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o644)  # readable by node_exporter whatever the umask
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _child(job: Callable[[], None]) -> None:
    """The forked process: no signal reaches the supervisor's handlers (whose wake-up fd it
    shares), nothing of the parent's Python state is touched, the exit status is the errno."""
    code = 0
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        job()
    except OSError as exc:
        code = exc.errno if exc.errno and 0 < exc.errno < 255 else 254
    except BaseException:
        code = 255
    os._exit(code)


class TextfileWriter:
    def __init__(self, path: str, render: Callable[[], bytes], poller: Poller, timers: Timers,
                 clock: Callable[[], float], *, interval: float = TEXTFILE_INTERVAL,
                 stuck: float = STUCK, on_error: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._render = render
        self._poller = poller
        self._timers = timers
        self._clock = clock
        self._interval = interval
        self._stuck = stuck
        self._on_error = on_error
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._started = 0.0
        self._timer: Timer | None = None
        self._last_error: str | None = None  # told once until it changes or the file is written
        self.written = 0  # files written
        self.skipped = 0  # rounds skipped: the previous writer was still busy

    def start(self) -> None:
        """Write now, then every interval."""
        self._tick()

    def _tick(self) -> None:
        now = self._clock()
        self._timer = self._timers.call_at(now + self._interval, self._tick)
        if self._pid is not None:
            self.skipped += 1
            if now - self._started >= self._stuck:
                self._error(f"metrics.textfile {self.path}: the writer has been busy for "
                            f"{now - self._started:.0f} s (a slow or hung disk?); killed")
                self._kill()
            return
        try:
            data = self._render()
        except Exception as exc:  # a bug in rendering must not end the supervisor
            self._error(f"metrics.textfile: rendering the metrics failed: {exc!r}")
            return
        self._spawn(lambda: _write_file(self.path, data), now)

    def _spawn(self, job: Callable[[], None], now: float) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            self._error(f"metrics.textfile {self.path}: cannot fork a writer: {exc.strerror}")
            return
        if pid == 0:
            _child(job)
        self._pid, self._started = pid, now
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfd (pid reaped?): reap it at the next tick instead
            self._pidfd = None
            return
        self._poller.register(self._pidfd, self._reap)

    def _reap(self) -> None:
        if self._pid is None:
            return
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, 0
        if pid == 0:
            return  # a spurious wake-up: the pidfd is readable only once it ended
        self._forget_child()
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self.written += 1
            self._last_error = None
        elif code < 0:
            self._error(f"metrics.textfile {self.path}: the writer was killed by "
                        f"{signal.Signals(-code).name}")
        else:
            reason = os.strerror(code) if code < 254 else "an unexpected error"
            self._error(f"metrics.textfile {self.path}: cannot write it: {reason}; check "
                        f"that the directory exists and the service may write there "
                        f"(ReadWritePaths=)")

    def _forget_child(self) -> None:
        if self._pidfd is not None:
            self._poller.unregister(self._pidfd)
            os.close(self._pidfd)
        self._pid = self._pidfd = None

    def _kill(self) -> None:
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass

    def _error(self, message: str) -> None:
        if message != self._last_error:
            self._last_error = message
            if self._on_error is not None:
                self._on_error(message)

    def fds(self) -> list[int]:
        return [self._pidfd] if self._pidfd is not None else []

    def close(self, remove: bool = True) -> None:
        """Stop writing; with `remove`, a last forked process removes the file once a writer
        still running is gone (a stale file would show a stopped fleet as up)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer = self._pidfd
        if writer is not None:
            self._kill()
            self._poller.unregister(writer)
        if remove:
            path = self.path

            def remove_file() -> None:
                if writer is not None:  # inherited: readable once the killed writer is gone
                    waiter = select.poll()
                    waiter.register(writer, select.POLLIN)
                    waiter.poll(REMOVE_WAIT_MS)
                for name in (path, temporary_path(path)):
                    try:
                        os.unlink(name)
                    except FileNotFoundError:
                        pass

            try:  # twice: the remover is nobody's to reap once the supervisor moved on
                pid = os.fork()
                if pid == 0:
                    _child(lambda: os.fork() == 0 and _child(remove_file))  # type: ignore
                os.waitpid(pid, 0)  # the middle one exits right after its fork
            except OSError:
                pass
        if writer is not None:
            os.close(writer)
            self._pid = self._pidfd = None
