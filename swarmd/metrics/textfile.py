"""`metrics.textfile`: the exposition as a file for node_exporter's textfile collector.

A write to a regular file can block for as long as its disk likes (O_NONBLOCK means nothing
there), so the loop never writes the file itself. It renders the text (the same work as a
scrape), puts it in a memfd (memory: never blocks) and spawns a small writer that reads it
from its stdin, writes a temporary file in the same directory and renames it over the old one:
node_exporter sees the old file or the new one, never half of one (it reads only *.prom names;
the temporary one ends in .tmp). The writer's pidfd is in the loop, so its end is noticed and
reaped like a node's. A writer still busy at the next interval is left alone (that round is
skipped); one busy longer than `stuck` is killed and reported.

Spawned (posix_spawn: vfork + exec), not forked: a fork copies the supervisor's page tables,
which costs the loop more the more the supervisor holds (a preloaded app), and not a thread: a
supervisor that forks nodes stays single-threaded (a fork copies a lock another thread holds in
its held state; Python 3.12 warns at every such fork). bench/metrics_textfile.py measures both.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timer, Timers

TEXTFILE_INTERVAL = 15.0  # node_exporter is typically scraped every 15 s
STUCK = 60.0  # seconds a writer may take before it is killed (a hung NFS mount, say)
REMOVE_WAIT = 5.0  # seconds the remover waits for a killed writer to be gone
_ENV = {"LC_ALL": "C.UTF-8"}

# The writer: argv path tmp; the text on stdin; a problem as one line on stderr, exit 1.
WRITER = """\
import os, sys
path, tmp = sys.argv[1], sys.argv[2]
try:
    data = sys.stdin.buffer.read()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.rename(tmp, path)
except OSError as exc:
    sys.stderr.write(exc.strerror or str(exc))
    sys.exit(1)
"""
# The remover: argv wait path tmp; waits up to `wait` seconds for fd 3 (a writer's pidfd).
REMOVER = """\
import os, select, sys
wait, names = float(sys.argv[1]), sys.argv[2:]
if wait:
    poll = select.poll()
    poll.register(3, select.POLLIN)
    poll.poll(wait * 1000)
for name in names:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
"""


def temporary_path(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.swarmd.tmp")


def spawn_python(script: str, args: list[str], stdin: bytes = b"",
                 extra_fd: int | None = None) -> tuple[int, int]:
    """Start `python -I -S -c script args` with `stdin` on its stdin (from a memfd) and its
    stderr into a memfd; returns (pid, stderr memfd). The loop waits for nothing."""
    data = os.memfd_create("swarmd-textfile", os.MFD_CLOEXEC)
    errors = os.memfd_create("swarmd-textfile-errors", os.MFD_CLOEXEC)
    try:
        os.write(data, stdin)
        os.lseek(data, 0, os.SEEK_SET)
        actions = [(os.POSIX_SPAWN_DUP2, data, 0), (os.POSIX_SPAWN_DUP2, errors, 2)]
        if extra_fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, extra_fd, 3))
        python = sys.executable or "/usr/bin/python3"
        pid = os.posix_spawn(python, [python, "-I", "-S", "-c", script, *args], _ENV,
                             file_actions=actions, setsigdef=(signal.SIGTERM, signal.SIGINT))
    except BaseException:
        os.close(errors)
        raise
    finally:
        os.close(data)
    return pid, errors


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
        self._errors: int | None = None  # the running writer's stderr (a memfd)
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
        try:
            pid, errors = spawn_python(WRITER, [self.path, temporary_path(self.path)], data)
        except OSError as exc:
            self._error(f"metrics.textfile {self.path}: cannot start a writer: {exc.strerror}")
            return
        self._pid, self._errors, self._started = pid, errors, now
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # cannot happen for our own unreaped child; reap it now if it does
            self._reap()
            return
        self._poller.register(self._pidfd, self._reap)

    def _reap(self) -> None:
        if self._pid is None:
            return
        try:
            pid, status = os.waitpid(self._pid, 0 if self._pidfd is None else os.WNOHANG)
        except ChildProcessError:
            pid, status = self._pid, 0
        if pid == 0:
            return  # a spurious wake-up: the pidfd is readable only once it ended
        said = self._forget_child()
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self.written += 1
            self._last_error = None
        elif code < 0:
            self._error(f"metrics.textfile {self.path}: the writer was killed by "
                        f"{signal.Signals(-code).name}")
        else:
            self._error(f"metrics.textfile {self.path}: cannot write it: "
                        f"{said or f'the writer exited with {code}'}; check that the "
                        f"directory exists and the service may write there (ReadWritePaths=)")

    def _forget_child(self) -> str:
        """Close what the writer left; returns what it said on stderr."""
        said = ""
        if self._errors is not None:
            said = os.pread(self._errors, 500, 0).decode("utf-8", "replace").strip()
            os.close(self._errors)
        if self._pidfd is not None:
            self._poller.unregister(self._pidfd)
            os.close(self._pidfd)
        self._pid = self._pidfd = self._errors = None
        return said

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
        return [fd for fd in (self._pidfd, self._errors) if fd is not None]

    def close(self, remove: bool = True) -> None:
        """Stop writing; with `remove`, a last helper removes the file once a writer still
        running is gone (a stale file would show a stopped fleet as up). The loop reaps the
        helper if it runs long enough; nothing waits for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer = self._pidfd
        self._kill()
        if remove:
            wait = str(REMOVE_WAIT) if writer is not None else "0"
            try:
                pid, errors = spawn_python(REMOVER, [wait, self.path,
                                                     temporary_path(self.path)],
                                           extra_fd=writer)
            except OSError:
                pass
            else:
                os.close(errors)
                _reap_later(self._poller, pid)
        if self._pid is not None:
            _reap_later(self._poller, self._pid)
            self._forget_child()


def _reap_later(poller: Poller, pid: int) -> None:
    """A child nobody waits for: reaped from the loop when it ends (no zombie left behind)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return

    def reap() -> None:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            poller.unregister(pidfd)
            os.close(pidfd)

    poller.register(pidfd, reap)
