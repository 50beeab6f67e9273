"""A load in a throwaway fork, for the first start and `swarmd check`: the config and the app
are tried in a child, bounded in time, so that nothing they do can hang or end the caller.

The config must be read within CONFIG_TIME_LIMIT (its own timeouts are not known before), the
app imported within the config's `timeouts.boot`.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

from swarmd.candidate.wire import ChannelClosed, Kind, encode, read_messages
from swarmd.config import Config, from_data
from swarmd.config.durations import format_duration

CONFIG_TIME_LIMIT = 10.0  # seconds to read and check a config file


class TrialResult(NamedTuple):
    config: Config | None  # None: rejected (see problems), or a stop came first
    problems: list[str]
    stopped: bool = False  # a stop signal arrived while loading


def _run_child(path: str, write_end: int) -> None:  # pragma: no cover - runs in the child
    from swarmd.candidate.load import load_version
    from swarmd.node.child import prctl_pdeathsig

    code = 0
    try:
        prctl_pdeathsig(signal.SIGKILL)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        for sig in (signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN):
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

        def send(kind: Kind, **fields: object) -> None:
            data = encode(kind, **fields)
            while data:
                data = data[os.write(write_end, data):]

        load_version(path, send, throwaway=True)
    except BaseException:  # noqa: BLE001 - the parent reads what was sent, or the silence
        code = 1
    finally:
        os._exit(code)


class Trial:
    """A load running in a throwaway child, started now and waited for later: the caller
    does its own work (importing the supervisor) while the child reads and imports."""

    def __init__(self, path: str) -> None:
        self.path = path
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_end)
            _run_child(path, write_end)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.pid = pid
        self.fd = read_end
        self.pidfd = os.pidfd_open(pid)  # signals only ever reach this child, even reaped

    def wait(self, *, wake_fd: int | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> TrialResult:
        """The child's answer within the limits. `wake_fd` is watched as well (the signal
        wake-up fd): when `should_stop()` says so, the child is killed and the result says
        `stopped`."""
        try:
            return _wait(self.pid, self.path, self.fd, wake_fd, should_stop)
        finally:
            os.close(self.fd)
            _end(self.pid, self.pidfd)


def load_in_a_fork(path: str, *, wake_fd: int | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> TrialResult:
    """Fork, load `path` in the child, wait for its answer (see Trial)."""
    return Trial(path).wait(wake_fd=wake_fd, should_stop=should_stop)


def _wait(pid: int, path: str, fd: int, wake_fd: int | None,
          should_stop: Callable[[], bool]) -> TrialResult:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
    buffer = bytearray()
    config: Config | None = None
    deadline = time.monotonic() + CONFIG_TIME_LIMIT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if config is None:
                return TrialResult(None, [f"{path}: could not be read and checked within "
                                          f"{format_duration(CONFIG_TIME_LIMIT)}"])
            return TrialResult(None, [f"app: importing {config.app!r} did not finish within "
                                      f"timeouts.boot ({format_duration(config.timeouts.boot)}"
                                      f"); fix the app, or raise timeouts.boot"])
        for ready, _ in poller.poll(left * 1000):
            if ready == wake_fd:
                _drain(wake_fd)
        if should_stop():
            return TrialResult(None, [], stopped=True)
        try:
            messages, eof = read_messages(fd, buffer)
        except ChannelClosed as exc:
            return TrialResult(None, [f"swarmd: the loader sent {exc}"])
        for message in messages:
            kind = message["t"]
            if kind == Kind.CONFIG.value:
                config = from_data(message["config"])
                deadline = time.monotonic() + config.timeouts.boot
            elif kind == Kind.LOADED.value and config is not None:
                return TrialResult(config, [])
            elif kind == Kind.FAILED.value:
                return TrialResult(None, [str(p) for p in message.get("problems", [])])
        if eof:
            return TrialResult(None, [_silent_end(pid, path, config)])


def _silent_end(pid: int, path: str, config: Config | None) -> str:
    """The loader ended without an answer: say how, and while doing what."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
           else f"exited with status {os.waitstatus_to_exitcode(status)}")
    doing = (f"reading {path}" if config is None
             else f"importing the app {config.app!r}")
    return f"swarmd: the loader process {how} while {doing}"


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _end(pid: int, pidfd: int) -> None:
    """Kill the child if it still runs, and reap it."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
