"""The first start's loader (and `swarmd check`'s): the config and the app are tried in a
throwaway child, bounded in time, so that nothing they do can hang or end the caller; then, at a
first start, the same child forks the fleet.

The config must be read within CONFIG_TIME_LIMIT (its own timeouts are not known before), the
app imported within the config's `timeouts.boot`. Once loaded, the child waits for the word
(GO: the supervisor is a child subreaper by then), forks every node with the app it has
imported, hands each node's pipes over, and exits; the nodes become the supervisor's children.
The supervisor imports the app for its own later forks while the nodes boot: the first start
imports the app once on its way to READY=1, not twice in a row.
"""

from __future__ import annotations

import os
import time

# Only os and time above: the first start forks the trial as early as it can (the supervisor's
# own imports run meanwhile); the rest loads after the fork, where it is used (even typing).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from swarmd.candidate.channel import Channel
    from swarmd.config import Config
    from swarmd.node.heartbeat import BeatTable
    from swarmd.node.spawn import Forked

CONFIG_TIME_LIMIT = 10.0  # seconds to read and check a config file
PR_SET_PDEATHSIG = 1
OUTPUT_TAIL = 20  # lines of what the loader printed, kept to explain a failure
OUTPUT_LINE = 300


# The loader's nodes wait until it has forked them all (they become the supervisor's children
# only when it exits), while the supervisor's own forks overlap with the nodes' boots: the
# loader forks the fleet only when importing the app again would cost the supervisor more
# than that wait, ~2 ms a node here (bench/README.md, "start").
FLEET_WAIT_PER_NODE = 0.002


class TrialResult:
    """What a trial load gave: the config, or why there is none."""

    __slots__ = ("config", "problems", "stopped", "import_seconds")

    def __init__(self, config: Config | None, problems: list[str],
                 stopped: bool = False, import_seconds: float = 0.0) -> None:
        self.config = config  # None: rejected (see problems), or a stop came first
        self.problems = problems
        self.stopped = stopped  # a stop signal arrived while loading
        self.import_seconds = import_seconds  # how long the app took to import there

    @property
    def loader_forks(self) -> bool:
        """Whether the loader should fork the fleet (see FLEET_WAIT_PER_NODE): only with
        preload (without, each node imports the app itself: nothing of an import is shared)."""
        config = self.config
        return (config is not None and config.command is None and config.preload
                and self.import_seconds > config.nodes * FLEET_WAIT_PER_NODE)


def _run_child(path: str, sock_fd: int, fleet: bool,
               beats: BeatTable | None) -> None:  # pragma: no cover - child
    import ctypes
    import signal
    import socket

    code = 0
    try:
        # fenced like a node: it dies with its parent (libc's prctl, not swarmd.node.child's,
        # which would load a node's logging into this throwaway process)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        for sig in (signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN):
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # the nodes' too
            os.environ.pop(name, None)
        from swarmd.candidate.channel import Channel
        from swarmd.candidate.load import load_version

        channel = Channel(socket.socket(fileno=sock_fd))
        loaded = load_version(path, channel.send, throwaway=True, freeze=fleet)
        if loaded is not None and fleet:
            _fork_the_fleet(channel, loaded.config, loaded.app, beats)
    except BaseException:  # noqa: BLE001 - the parent reads what was sent, or the silence
        code = 1
    finally:
        os._exit(code)


def _fork_the_fleet(channel: Channel, config: Config, app: object,
                    beats: BeatTable | None) -> None:  # pragma: no cover - runs in the child
    """After GO: every node of the config, forked here, announced with its pipes."""
    from swarmd.candidate.wire import Kind
    from swarmd.node.spawn import Forked, Recipe, node_limits, spawn_first_batch

    go: dict[str, object] = {}
    while not go:
        go = next((m for m, _ in channel.receive() if m["t"] == Kind.GO.value), {})
    # whether nodes write to the journal: the supervisor's stderr says, not ours (a pipe)
    recipe = Recipe(app=app, command=config.command, env=dict(config.env),
                    journal=bool(go.get("journal")), limits=node_limits(),
                    supervisor_pid=os.getppid(), output=config.output,
                    cgroups=go.get("cgroups") or None, app_name=config.app,  # type: ignore[arg-type]
                    beats=beats)

    def announce(result: Forked | OSError, node_id: int) -> None:
        if isinstance(result, Forked):
            channel.send(Kind.SPAWNED, fds=result.read_ends, slot=node_id,
                         generation=result.generation, pid=result.pid, at=result.started_at)
        else:
            channel.send(Kind.SPAWN_FAILED, slot=node_id, generation=0,
                         reason=f"fork failed: {result.strerror or result}")

    spawn_first_batch([(slot_id, 0) for slot_id in config.node_ids], recipe,
                      [channel.fileno()], announce)  # type: ignore[arg-type]


def first_start(path: str) -> tuple[Trial, BeatTable | None]:
    """A first start's beginning, before the supervisor's modules are imported: a .socket
    unit's sockets taken and the fleet's heartbeat table made (the loader's nodes get both),
    then the loader forked to read `path` and import its app."""
    from swarmd.node.heartbeat import BeatTable
    from swarmd.systemd import activation

    activation.take()
    beats = BeatTable.create()
    return Trial(path, beats=beats), beats


class Trial:
    """A load running in a throwaway child, started now and waited for later: the caller
    does its own work (importing the supervisor) while the child reads and imports.
    `fleet`: the child forks the fleet after GO (the first start), else it ends once loaded
    (`swarmd check`); `beats`: the supervisor's heartbeat table, which its nodes beat in."""

    def __init__(self, path: str, fleet: bool = True, beats: BeatTable | None = None) -> None:
        import socket

        self.path = path
        self.fleet = fleet
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            ours.close()
            os.close(out_r)
            os.dup2(out_w, 1)  # what the config's app prints while imported: to the parent
            os.dup2(out_w, 2)
            os.close(out_w)
            _run_child(path, theirs.detach(), fleet, beats)
        theirs.close()
        os.close(out_w)
        ours.setblocking(False)
        os.set_blocking(out_r, False)
        self.pid = pid
        self.sock = ours
        self.output = Output(out_r)
        self.pidfd = os.pidfd_open(pid)  # signals only ever reach this child, even reaped
        self.config: Config | None = None
        self.forked: list[Forked] = []
        self._channel: Channel | None = None

    def wait(self, *, wake_fd: int | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> TrialResult:
        """The child's answer within the limits. `wake_fd` is watched as well (the signal
        wake-up fd): when `should_stop()` says so, the child is killed and the result says
        `stopped`. A loaded config (with `fleet`) leaves the child waiting for go()."""
        from swarmd.candidate.channel import Channel

        self._channel = Channel(self.sock)
        try:
            result = self._wait(wake_fd, should_stop)
        except BaseException:
            self.end()
            raise
        if result.config is None or not self.fleet:
            self.end()
        if result.config is None and not result.stopped:
            self.output.read()
            result.problems += self.output.tail()
        self.config = result.config
        return result

    def _wait(self, wake_fd: int | None, should_stop: Callable[[], bool]) -> TrialResult:
        import select

        from swarmd.candidate.wire import ChannelClosed, ChannelEnded, Kind
        from swarmd.config import from_data
        from swarmd.config.durations import format_duration

        assert self._channel is not None
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.output.fd, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        config: Config | None = None
        deadline = time.monotonic() + CONFIG_TIME_LIMIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if config is None:
                    return TrialResult(None, [f"{self.path}: could not be read and checked "
                                              f"within {format_duration(CONFIG_TIME_LIMIT)}"])
                return TrialResult(None, [f"app: importing {config.app!r} did not finish "
                                          f"within timeouts.boot "
                                          f"({format_duration(config.timeouts.boot)}); fix "
                                          f"the app, or raise timeouts.boot"])
            for ready, _ in poller.poll(left * 1000):
                if ready == wake_fd:
                    _drain(wake_fd)
                elif ready == self.output.fd and not self.output.read():
                    poller.unregister(self.output.fd)  # closed: it would wake poll for ever
            if should_stop():
                return TrialResult(None, [], stopped=True)
            try:
                messages = self._channel.receive()
            except ChannelEnded:
                return TrialResult(None, [self._silent_end(config)])
            except ChannelClosed as exc:
                return TrialResult(None, [f"swarmd: the loader sent {exc}"])
            for message, _fds in messages:
                kind = message["t"]
                if kind == Kind.CONFIG.value:
                    config = from_data(message["config"])
                    deadline = time.monotonic() + config.timeouts.boot
                elif kind == Kind.LOADED.value and config is not None:
                    return TrialResult(config, [],
                                       import_seconds=float(message.get("seconds", 0.0)))
                elif kind == Kind.FAILED.value:
                    return TrialResult(None, [str(p) for p in message.get("problems", [])])

    def go(self, journal: bool, cgroups: str | None) -> None:
        """Tell the loader to fork the fleet (the caller is a child subreaper now), whose
        nodes log to the journal (`journal`) or to their stderr, and move into their cgroups
        under `cgroups` (None: there are none)."""
        from swarmd.candidate.wire import ChannelClosed, Kind

        assert self._channel is not None
        try:
            self.sock.setblocking(True)
            self._channel.send(Kind.GO, journal=journal, cgroups=cgroups)
            self.sock.setblocking(False)
        except ChannelClosed:
            pass  # gone: collect() finds no node, the supervisor forks them all

    def collect(self) -> list[Forked]:
        """The nodes the loader forked, once it is done (within timeouts.boot); a node it did
        not fork is the caller's to fork. Ends the loader."""
        import select

        from swarmd.candidate.wire import ChannelClosed, Kind
        from swarmd.node.spawn import Forked

        assert self._channel is not None and self.config is not None
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        deadline = time.monotonic() + self.config.timeouts.boot
        try:
            while time.monotonic() < deadline:
                poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
                try:
                    messages = self._channel.receive()
                except ChannelClosed:
                    break  # it exited: every node it forked was announced before
                for message, fds in messages:
                    if message["t"] == Kind.SPAWNED.value and len(fds) == 3:
                        self.forked.append(Forked(
                            int(message["slot"]), int(message["generation"]),
                            int(message["pid"]), fds, float(message["at"])))  # type: ignore[arg-type]
                    else:
                        for fd in fds:
                            os.close(fd)
        finally:
            self.end()
        return self.forked

    def _silent_end(self, config: Config | None) -> str:
        """The loader ended without an answer: say how, and while doing what."""
        import signal

        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0
        how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
               if os.WIFSIGNALED(status)
               else f"exited with status {os.waitstatus_to_exitcode(status)}")
        doing = (f"reading {self.path}" if config is None
                 else f"importing the app {config.app!r}")
        return f"swarmd: the loader process {how} while {doing}"

    def end(self) -> None:
        """Kill the child if it still runs, reap it, close what was ours (once)."""
        import signal

        if self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(self.pidfd)
            self.pidfd = -1
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.output.read()
        self.output.close()
        if self._channel is not None:
            self._channel.close()
        else:
            self.sock.close()


class Output:
    """The last lines a throwaway loader printed (an app printing without end costs a bounded
    amount of memory here)."""

    def __init__(self, fd: int) -> None:
        from collections import deque

        self.fd = fd
        self.lines: deque[str] = deque(maxlen=OUTPUT_TAIL)
        self._partial = b""

    def read(self) -> bool:
        """Take what is there; False once the loader closed its end."""
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, OSError):
                return True
            if not data:
                return False
            *whole, self._partial = (self._partial + data).split(b"\n")
            self._partial = self._partial[-OUTPUT_LINE * 4:]
            self.lines.extend(line.decode("utf-8", "replace")[:OUTPUT_LINE] for line in whole)
        return False

    def tail(self) -> list[str]:
        lines = list(self.lines)
        if self._partial:
            lines.append(self._partial.decode("utf-8", "replace")[:OUTPUT_LINE])
        return [line for line in lines if line.strip()][-OUTPUT_TAIL:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load_in_a_fork(path: str, *, wake_fd: int | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> TrialResult:
    """Fork, load `path` in the child, wait for its answer (see Trial), end the child."""
    return Trial(path, fleet=False).wait(wake_fd=wake_fd, should_stop=should_stop)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
