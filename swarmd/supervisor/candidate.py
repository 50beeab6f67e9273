"""A deploy's candidate process, seen from the supervisor: started, read, asked for nodes, ended.

The candidate is `python -m swarmd _candidate` run afresh (the swarmd code on disk, no module of
the running supervisor), so whatever the new config or app does happens there: the supervisor
only reads its messages from the loop, non-blocking, and kills it when its time is up.
"""

from __future__ import annotations

import enum
import fcntl
import os
import signal
import socket
import sys
from typing import Any, NamedTuple

from swarmd.candidate.channel import Channel
from swarmd.candidate.wire import ChannelClosed, Kind
from swarmd.config import Config, from_data
from swarmd.node.heartbeat import BeatTable
from swarmd.node.process import NodeProcess
from swarmd.node.spawn import NodeLimits, NodePipes
from swarmd.systemd import activation

CANDIDATE_FD = 3


class Phase(enum.Enum):
    CONFIG = "reading the config"
    APP = "importing the app"
    READY = "ready"
    FAILED = "failed"


class Reply(NamedTuple):
    """What one message of the candidate means for the deploy."""

    kind: Kind
    config: Config | None = None
    version: str | None = None
    problems: list[str] | None = None
    seconds: float = 0.0
    proc: NodeProcess | None = None  # SPAWNED: the new node, ours now
    slot: int | None = None
    reason: str | None = None  # SPAWN_FAILED


def entry_argv() -> list[str]:
    """How this program was started, up to its arguments (`python -m swarmd`, or the venv's
    python and its `swarmd` script, with the interpreter's own options): the same way in
    for the candidate and for the supervisor's re-execution."""
    orig = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    keep = len(orig) - (len(sys.argv) - 1)
    return orig[:keep] if keep > 0 else [sys.executable, "-m", "swarmd"]


class Candidate:
    """One candidate process and its channel; pending spawns hold their pipes' read ends."""

    def __init__(self, pid: int, pidfd: int, channel: Channel, started_at: float) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel
        self.started_at = started_at
        self.phase = Phase.CONFIG
        self.config: Config | None = None
        self.version: str | None = None
        self.exit_status: int | None = None
        self._pending: dict[tuple[int, int], tuple[int, int, int]] = {}

    @classmethod
    def start(cls, entry: list[str], config_path: str, *, journal: bool, limits: NodeLimits,
              now: float, cgroups: str | None = None, beats: BeatTable | None = None
              ) -> Candidate:
        """posix_spawn (no copy of the supervisor's memory) of the swarmd entry point, with
        one end of a socket pair as fd 3 (after the listening sockets of a socket-activated
        unit, which it passes on to its nodes), the heartbeat table's memfd after it, and no
        other fd of ours (close-on-exec)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel_fd = CANDIDATE_FD + activation.count()  # after the sockets its nodes inherit
        argv = [*entry, "_candidate", "--fd", str(channel_fd), "--supervisor-pid",
                str(os.getpid()), "--limits", limits.to_arg(), "-c", config_path]
        if journal:
            argv.append("--journal")
        if cgroups:
            argv += ["--cgroups", cgroups]
        actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), channel_fd)]
        beats_fd = None
        if beats is not None:  # from above both targets: no dup2 may clobber its source
            beats_fd = fcntl.fcntl(beats.fd, fcntl.F_DUPFD_CLOEXEC, channel_fd + 2)
            argv += ["--beats", str(channel_fd + 1)]
            actions.append((os.POSIX_SPAWN_DUP2, beats_fd, channel_fd + 1))
        try:
            pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions,
                                 setsigmask=set(),
                                 setsigdef=(signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN,
                                            signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                                            signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ))
        finally:
            theirs.close()
            if beats_fd is not None:
                os.close(beats_fd)
        pidfd = os.pidfd_open(pid)
        ours.setblocking(False)
        return cls(pid, pidfd, Channel(ours), now)

    def fds(self) -> list[int]:
        fds = [self.pidfd, self.channel.fileno()]
        for read_ends in self._pending.values():
            fds.extend(read_ends)
        return fds

    def read(self, now: float) -> list[Reply]:
        """The messages that arrived; ChannelClosed when the candidate is gone or broken."""
        replies = []
        for message, _fds in self.channel.receive():
            reply = self._interpret(message, now)
            if reply is not None:
                replies.append(reply)
        return replies

    def _interpret(self, message: dict[str, Any], now: float) -> Reply | None:
        kind = Kind(message["t"])
        if kind is Kind.CONFIG:
            self.config = from_data(message["config"])
            self.version = str(message.get("version"))
            self.phase = Phase.APP
            return Reply(kind, config=self.config, version=self.version)
        if kind is Kind.LOADED:
            self.phase = Phase.READY
            return Reply(kind, seconds=float(message.get("seconds", 0.0)))
        if kind is Kind.FAILED:
            self.phase = Phase.FAILED
            return Reply(kind, problems=[str(p) for p in message.get("problems", [])])
        if kind in (Kind.SPAWNED, Kind.SPAWN_FAILED):
            key = (int(message["slot"]), int(message["generation"]))
            read_ends = self._pending.pop(key, None)
            if read_ends is None:
                return None
            if kind is Kind.SPAWN_FAILED:
                _close(read_ends)
                return Reply(kind, slot=key[0], reason=str(message.get("reason")))
            pid = int(message["pid"])
            try:
                pidfd = os.pidfd_open(pid)  # the node is ours (or about to be): pid stays ours
            except OSError as exc:
                _close(read_ends)
                return Reply(Kind.SPAWN_FAILED, slot=key[0],
                             reason=f"cannot watch pid {pid}: {exc.strerror}")
            proc = NodeProcess.adopt(key[0], key[1], pid, pidfd, read_ends, now,
                                     is_command=bool(self.config and self.config.command))
            return Reply(kind, slot=key[0], proc=proc)
        return None

    def request_spawn(self, slot_id: int, generation: int) -> None:
        """Ask for a node in `slot_id`; its SPAWNED reply brings the NodeProcess."""
        pipes = NodePipes.open()
        try:
            self.channel.send(Kind.SPAWN, fds=pipes.write_ends, slot=slot_id,
                              generation=generation)
        except ChannelClosed:
            pipes.close(pipes.read_ends)
            raise
        finally:
            pipes.close(pipes.write_ends)
        self._pending[(slot_id, generation)] = pipes.read_ends

    def reap(self) -> int | None:
        """The candidate's wait status once it ended (its pidfd turned readable), else None."""
        if self.exit_status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid != 0:
                self.exit_status = status
        return self.exit_status

    def describe_end(self) -> str:
        status = self.exit_status
        if status is None:
            return "the candidate process ended"
        how = (f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
               if os.WIFSIGNALED(status)
               else f"exited with status {os.waitstatus_to_exitcode(status)}")
        return f"the candidate process {how} while {self.phase.value}"

    def kill(self) -> None:
        """SIGKILL (it holds nothing worth a clean end: its nodes are the supervisor's);
        the loop reaps it when its pidfd says so."""
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Drop the channel and every pending spawn's pipes (the pidfd stays until reaped)."""
        for read_ends in self._pending.values():
            _close(read_ends)
        self._pending.clear()
        self.channel.close()

    def close_pidfd(self) -> None:
        os.close(self.pidfd)


def _close(fds: tuple[int, ...]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
