"""One node process as the supervisor sees it: fork, pipes, pidfd, signals, reads, reaping.

Every signal goes through the pidfd, so a pid that was reaped and reused by another process is
never signalled; every fd is closed on both sides of the fork and again after the exit.
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Callable
from typing import NamedTuple

from swarmd.loop.timers import Timer
from swarmd.node.protocol import HealthBatch, HealthParser, LineSplitter
from swarmd.systemd.events import NodeRef

READ_CHUNK = 65536
MAX_READS_PER_WAKEUP = 4  # bounded work per node per loop turn: never starve the others
DRAIN_LIMIT = 1 << 20  # after an exit, read at most this much left-over output
HEALTHY_ONE = HealthBatch(worst=0, reports=1)  # see NodeProcess.read_health


class State(enum.Enum):
    BOOTING = "booting"  # forked, no report yet
    RUNNING = "running"
    DRAINING = "draining"  # quieted (TSTP) during a rolling reload
    STOPPING = "stopping"  # TERM sent, KILL follows after timeouts.shutdown
    EXITED = "exited"


class StopReason(enum.Enum):
    """Why swarmd asked a node to go (None on a node that went by itself)."""

    STOP = "stop"  # swarmd stops
    DEPLOY = "reload"  # a deploy replaces it
    ROLLBACK = "rollback"  # a failed deploy puts the old version back in its slot
    REMOVED = "removed"  # its slot is gone from the config
    HUNG = "hung"  # no report within a timeout
    HEALTH = "health"  # it reported a code whose action is restart
    RECYCLE = "recycle"  # above limits.memory, or past limits.lifetime
    SUPERVISOR_FAILED = "supervisor failed"

    @property
    def expected(self) -> bool:
        """An exit swarmd asked for as part of a plan, not a failure of the node."""
        return self in (StopReason.STOP, StopReason.DEPLOY, StopReason.ROLLBACK,
                        StopReason.REMOVED, StopReason.RECYCLE)


class ExitStatus(NamedTuple):
    code: int | None
    signal: int | None

    @classmethod
    def from_wait(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        return cls(os.WEXITSTATUS(status), None)

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {self.short()}"
        return f"exited with status {self.code}"

    def short(self) -> str:
        """`0`, `1`, `SIGKILL`: the `how` label of swarmd_node_exits_total."""
        if self.signal is None:
            return str(self.code)
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return str(self.signal)

    @property
    def clean(self) -> bool:
        return self.code == 0


class NodeProcess:
    """One incarnation of a slot. The slot (id) survives restarts; this object does not."""

    def __init__(self, node_id: int, generation: int, pid: int, pidfd: int, health_fd: int,
                 stdout_fd: int, stderr_fd: int, started_at: float, is_command: bool) -> None:
        self.id = node_id
        self.generation = generation
        self.pid = pid
        self.pidfd: int | None = pidfd
        self.health_fd: int | None = health_fd
        self.output_fds: dict[int, int] = {stdout_fd: 6, stderr_fd: 4}  # fd -> journal priority
        self.started_at = started_at
        self.is_command = is_command
        self.state = State.BOOTING
        self.first_report_at: float | None = None
        self.last_report_at: float | None = None
        self.healthy_since: float | None = None
        self.code: int | None = None  # worst code of the last read
        self.stop_reason: StopReason | None = None  # why we asked it to go; None: by itself
        self.stop_detail: str | None = None  # the reason in words, where it has details
        self.term_sent_at: float | None = None
        self.killed = False
        self.exit: ExitStatus | None = None
        self._health = HealthParser()
        self._splitters = {fd: LineSplitter() for fd in self.output_fds}
        self.timers: list[Timer] = []  # the supervisor's timers for it, cancelled at exit
        self.liveness: Timer | None = None  # the one boot/report deadline check
        self.version = 0  # which of the supervisor's versions (config and app) it runs
        self.drain_started_at: float | None = None
        self.reports = 0  # reports read from it and its heartbeats (for the metrics' totals)
        self.beats_seen = 0  # of its heartbeats, those counted in `reports`
        self.cpu_seconds: float | None = None  # its own CPU time, known once it is reaped

    @classmethod
    def adopt(cls, node_id: int, generation: int, pid: int, pidfd: int,
              read_ends: tuple[int, int, int], started_at: float, *, is_command: bool
              ) -> NodeProcess:
        """A NodeProcess for a forked child whose pipes' read ends are ours."""
        health_r, out_r, err_r = read_ends
        for fd in read_ends:
            os.set_blocking(fd, False)
        return cls(node_id, generation, pid, pidfd, health_r, out_r, err_r, started_at,
                   is_command)

    def take_beats(self, beats: tuple[int, float] | None) -> None:
        """Fold in its heartbeat entry (swarmd.node.heartbeat): `(beats, time of the last)`,
        None when it has none. Each beat is a report of code 0; beats only ever follow a 0
        read from the pipe, so the code stays what it is."""
        if beats is None or self.last_report_at is None:
            return
        count, at = beats
        if count > self.beats_seen:
            self.reports += count - self.beats_seen
            self.beats_seen = count
            self.last_report_at = max(self.last_report_at, at)

    def restore_outputs(self, output_fds: dict[int, int]) -> None:
        """The output pipes still open (fd -> journal priority), across a re-exec."""
        self.output_fds = dict(output_fds)
        self._splitters = {fd: LineSplitter() for fd in output_fds}

    @property
    def stop_text(self) -> str | None:
        """Why it was asked to go, as entries say it: "reload", "reported backlog (2)"."""
        if self.stop_reason is None:
            return None
        return self.stop_detail or self.stop_reason.value

    def track(self, timer: Timer) -> Timer:
        """Remember a timer to cancel at exit; forget those that ran or were cancelled, so a
        node that lives for months holds only its pending ones."""
        self.timers = [t for t in self.timers if not t.cancelled]
        self.timers.append(timer)
        return timer

    @property
    def ref(self) -> NodeRef:
        return NodeRef(self.id, self.pid, self.generation)

    @property
    def alive(self) -> bool:
        return self.exit is None

    def fds(self) -> list[int]:
        """Every fd the supervisor holds for this process (closed in other nodes' children)."""
        fds = list(self.output_fds)
        if self.pidfd is not None:
            fds.append(self.pidfd)
        if self.health_fd is not None:
            fds.append(self.health_fd)
        return fds

    def send(self, sig: int) -> bool:
        """Signal through the pidfd; False when the process is already gone."""
        if self.pidfd is None or self.exit is not None:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
            return True
        except ProcessLookupError:
            return False

    def ask_to_go(self, reason: StopReason, detail: str | None = None) -> None:
        """Record why swarmd wants it gone; the first reason stays."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = reason, detail

    def terminate(self, reason: StopReason, now: float, detail: str | None = None) -> None:
        """TERM, then CONT so that a stopped (frozen) process receives it."""
        self.ask_to_go(reason, detail)
        if self.term_sent_at is None:
            self.term_sent_at = now
            self.send(signal.SIGTERM)
            self.send(signal.SIGCONT)

    def kill(self) -> None:
        self.killed = self.send(signal.SIGKILL) or self.killed

    def read_health(self) -> HealthBatch | None:
        """All reports waiting in the pipe, folded; None at EOF (pipe closed by the node).
        HEALTHY_ONE (shared: never modify it) when the read was one "0\\n" and nothing else,
        the wake-up of a fleet at rest, which then costs no parsing and no allocation."""
        fd = self.health_fd
        if fd is None:
            return HealthBatch()
        total: HealthBatch | None = None
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if data == b"0\n" and total is None and self._health.at_line_start:
                return HEALTHY_ONE
            batch = self._health.feed(data) if data else self._health.close()
            if total is None:
                total = batch  # the usual wake-up: one short read, nothing to merge
            else:
                total.merge(batch)
            if not data:
                return total if total.reports or total.errors else None
            if len(data) < READ_CHUNK:
                break
        return total if total is not None else HealthBatch()

    def close_health(self) -> None:
        if self.health_fd is not None:
            os.close(self.health_fd)
            self.health_fd = None

    def read_output(self, fd: int, limit: int = READ_CHUNK * MAX_READS_PER_WAKEUP
                    ) -> tuple[list[str], bool]:
        """Lines waiting on one output pipe, and whether the pipe hit EOF."""
        lines: list[str] = []
        splitter = self._splitters[fd]
        read = 0
        while read < limit:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return lines, False
            except OSError:
                data = b""
            if not data:
                return lines + splitter.close(), True
            read += len(data)
            lines.extend(splitter.feed(data))
        return lines, False

    def flush_output(self, fd: int) -> list[str]:
        """An unterminated last line, once the process is gone."""
        splitter = self._splitters.get(fd)
        return splitter.close() if splitter else []

    def close_output(self, fd: int) -> None:
        if self.output_fds.pop(fd, None) is not None:
            os.close(fd)

    def reap(self, before: Callable[[NodeProcess], None] | None = None) -> ExitStatus | None:
        """waitpid once the pidfd said the process ended; None if it has not, or if it is not
        our child yet (a deploy's node whose intermediate has not exited). `before` runs once
        it is known to have ended but is not reaped yet (its zombie still holds its pid and
        process group)."""
        if self.exit is not None:
            return self.exit
        try:
            if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return None
            if before is not None:
                before(self)
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
        except ChildProcessError:
            if _parent_of(self.pid) not in (None, os.getpid()):
                return None  # still the intermediate's: reparented to us in a moment
            pid, status = self.pid, 0  # reaped elsewhere: nothing more to learn
        if pid == 0:
            return None
        self.exit = ExitStatus.from_wait(status)
        return self.exit

    def close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _parent_of(pid: int) -> int | None:
    """The parent pid of a process (zombies included), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
