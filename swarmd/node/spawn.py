"""Forking a node, from the supervisor's side: what is worked out before the fork, the fork, and
what the parent keeps (swarmd/node/child.py is the child's side).

Two ways in. The supervisor forks a node from its own memory (`spawn`): every restart and the
first start, the fast path. A deploy's candidate forks its nodes through an intermediate
process that exits at once (`spawn_through_intermediate`), so that each new node becomes the
supervisor's child (it is a child subreaper) and the candidate can go away without them.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from swarmd.api import Node
from swarmd.config.output import OutputLimit
from swarmd.node import child, titles
from swarmd.node.heartbeat import BeatTable
from swarmd.node.process import NodeProcess
from swarmd.stdio import flush_std_streams

OOM_SCORE_BONUS = 300  # a node is a likelier OOM victim than its supervisor


class NodeLimits(NamedTuple):
    """What a node gets back of the process the supervisor started as."""

    nofile: tuple[int, int] | None  # the RLIMIT_NOFILE swarmd started with
    oom_score: int | None  # the node's oom_score_adj

    def to_data(self) -> dict[str, Any]:
        return {"nofile": list(self.nofile) if self.nofile else None,
                "oom_score": self.oom_score}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> NodeLimits:
        nofile = data.get("nofile")
        return cls(tuple(nofile) if nofile else None, data.get("oom_score"))  # type: ignore[arg-type]

    def to_arg(self) -> str:
        """For a command line: `1024:524288,300`, `-` for what is unknown."""
        nofile = ":".join(map(str, self.nofile)) if self.nofile else "-"
        oom = str(self.oom_score) if self.oom_score is not None else "-"
        return f"{nofile},{oom}"

    @classmethod
    def from_arg(cls, text: str) -> NodeLimits:
        nofile_text, _, oom_text = text.partition(",")
        nofile = (None if nofile_text in ("", "-")
                  else tuple(int(x) for x in nofile_text.split(":")))
        oom = None if oom_text in ("", "-") else int(oom_text)
        return cls(nofile, oom)  # type: ignore[arg-type]


def node_limits() -> NodeLimits:
    """What nodes get, read off this process before the supervisor changes its own."""
    try:
        with open("/proc/self/oom_score_adj") as handle:
            oom_score: int | None = min(1000, int(handle.read().strip() or 0)
                                        + OOM_SCORE_BONUS)
    except (OSError, ValueError):
        oom_score = None
    return NodeLimits(resource.getrlimit(resource.RLIMIT_NOFILE), oom_score)


def prepare_supervisor(nofile: tuple[int, int] | None = None) -> NodeLimits:
    """In the supervisor, once: lift the soft RLIMIT_NOFILE to the hard one (a fleet holds
    four fds per node), remembering the original for the nodes, as systemd does for services
    (a node gets the soft limit it would have had: select()-based code breaks above 1024);
    work out the oom_score_adj that nodes take, so a fork does not have to read it; make
    stdout line-buffered, which every node needs, once here instead of after every fork.
    `nofile`: the original limit, when a re-executed supervisor already lifted it."""
    if sys.stdout is not None and hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(line_buffering=True)  # what nodes need: print() is one line
        except (OSError, ValueError):
            pass
    limits = node_limits()
    soft, hard = limits.nofile or (0, 0)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass
    return limits if nofile is None else limits._replace(nofile=nofile)


PR_SET_CHILD_SUBREAPER = 36
_subreaper: list[bool] = []


def become_subreaper() -> None:
    """Orphaned descendants come to this process, not to init: the nodes a loader forks (a
    first start's, a deploy's), and whatever a node leaves behind, which it then reaps."""
    if _subreaper:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        pass
    _subreaper.append(True)


def fd_runs(fds: list[int]) -> list[tuple[int, int]]:
    """[3, 4, 5, 9, 10] -> [(3, 6), (9, 11)]: worked out in the supervisor, so that the child
    makes one close_range(2) per run of consecutive fds and nothing else. Two comprehensions
    over a set, no per-fd branch in Python: this runs before every fork."""
    present = set(fds)
    starts = sorted(fd for fd in present if fd - 1 not in present)
    ends = sorted(fd + 1 for fd in present if fd + 1 not in present)
    return list(zip(starts, ends, strict=True))


_log_handlers: dict[bool, logging.Handler] = {}  # journal? -> handler, made before the forks


def node_log_handler(journal: bool) -> logging.Handler:
    """The handler a node's root logger gets, built and attached once, before the forks: a
    node finds it in place (objects built or lists changed in every child cost copy-on-write
    faults between fork and first report). The supervisor itself never logs through the root
    logger (its entries go through its sinks), so having it attached here changes nothing."""
    handler = _log_handlers.get(journal)
    if handler is None:
        if journal:
            handler = child.JournalHandler({})
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        _log_handlers[journal] = handler
        root = logging.getLogger()
        if journal or not root.handlers:  # an app that set up its own keeps it, unjournaled
            root.addHandler(handler)
        if root.level in (logging.WARNING, logging.NOTSET):
            root.setLevel(logging.INFO)
        logging.getLogger("swarmd.node")
    return handler


def _node(node_id: int, generation: int, health_fd: int, supervisor_pid: int,
          beats: BeatTable | None) -> Node:
    """The Node an app gets, built before the fork (~40 fewer copy-on-write faults in the
    node, between its fork and its first report)."""
    return Node(node_id, generation, health_fd, logging.getLogger("swarmd.node"),
                supervisor_pid, beats=beats.writer(node_id) if beats is not None else None)


class NodePipes(NamedTuple):
    """The three pipes of a node: the parent keeps the read ends, the child the write ends."""

    health_r: int
    health_w: int
    out_r: int
    out_w: int
    err_r: int
    err_w: int

    @classmethod
    def open(cls) -> NodePipes:
        health_r, health_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        return cls(health_r, health_w, out_r, out_w, err_r, err_w)

    @property
    def read_ends(self) -> tuple[int, int, int]:
        return self.health_r, self.out_r, self.err_r

    @property
    def write_ends(self) -> tuple[int, int, int]:
        return self.health_w, self.out_w, self.err_w

    def close(self, fds: tuple[int, ...]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class Recipe(NamedTuple):
    """What a version forks its nodes with: the app (imported, or its name) or the command,
    the config's env and output limit, the limits and log destination of the supervisor, and
    where each node's cgroup is (None: no cgroups)."""

    app: Callable[..., Any] | str | None
    command: tuple[str, ...] | None
    env: dict[str, str]
    journal: bool
    limits: NodeLimits
    supervisor_pid: int
    output: OutputLimit = OutputLimit()
    cgroups: str | None = None  # the delegated cgroup holding node-N
    app_name: str = ""  # for the titles
    beats: BeatTable | None = None  # the fleet's heartbeat entries (app nodes beat there)

    def closed_in_nodes(self, fds: list[int]) -> list[int]:
        """`fds` and the heartbeat table's: a node keeps only its mapping of the table."""
        return fds if self.beats is None else [*fds, *self.beats.fds]

    def spec(self, node_id: int, generation: int, write_ends: tuple[int, int, int],
             close_fds: list[int], reparent_from: int | None = None) -> child.ChildSpec:
        return self.spec_with_runs(node_id, generation, write_ends,
                                   fd_runs(self.closed_in_nodes(close_fds)), reparent_from)

    def spec_with_runs(self, node_id: int, generation: int, write_ends: tuple[int, int, int],
                       close_runs: list[tuple[int, int]], reparent_from: int | None = None,
                       gate_fd: int | None = None) -> child.ChildSpec:
        health_w, out_w, err_w = write_ends
        node = None if self.command is not None else _node(node_id, generation, health_w,
                                                           self.supervisor_pid, self.beats)
        title = None
        if self.command is None and titles.load():
            title = titles.node_title(node_id, generation, self.app_name)
        return child.ChildSpec(
            node_id=node_id, generation=generation, supervisor_pid=self.supervisor_pid,
            health_fd=health_w, stdout_fd=out_w, stderr_fd=err_w,
            close_runs=close_runs, env=self.env, journal=self.journal,
            log_handler=None if self.command is not None else node_log_handler(self.journal),
            output=self.output,
            nofile=self.limits.nofile, oom_score=self.limits.oom_score, app=self.app,
            command=self.command, reparent_from=reparent_from, gate_fd=gate_fd, node=node,
            cgroup_dir=f"{self.cgroups}/node-{node_id}" if self.cgroups else None, title=title)


def spawn(node_id: int, generation: int, now: float, recipe: Recipe, *,
          close_fds: list[int]) -> NodeProcess:
    """Fork one node from this process and give it the CPU at once. The parent gets a
    NodeProcess; the child never returns from here.

    The node freezes the heap it inherits first thing (child.main), so that its collections
    never write to the pages it shares with the supervisor. The supervisor freezes nothing
    here: its preloaded app stays frozen for good (Supervisor.preload), and an unfreeze would
    hand that heap back to its own collector, which would then copy every page of it.

    The yield after the fork: the kernel mostly queues a new child on its parent's CPU, behind
    the parent; what the supervisor does after a fork costs it ~1 ms (every page it writes is
    copy-on-write again), which a replacement would wait out before running a line. (The
    first start's batch, spawn_batch, does not: there the next fork matters more.)"""
    pipes = NodePipes.open()
    flush_std_streams()
    # built here, not in the child: ~18 fewer copy-on-write faults between fork and app
    spec = recipe.spec(node_id, generation, pipes.write_ends, [*close_fds, *pipes.read_ends])
    try:
        pid = os.fork()
    except OSError:
        pipes.close(pipes.read_ends + pipes.write_ends)
        raise
    if pid == 0:  # the child
        child.main(spec)
    pipes.close(pipes.write_ends)
    os.sched_yield()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # pragma: no cover - kernels before 5.3; the child is ours and alive
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pipes.close(pipes.read_ends)
        raise
    return NodeProcess.adopt(node_id, generation, pid, pidfd, pipes.read_ends, now,
                             is_command=recipe.command is not None)


class Forked(NamedTuple):
    """A node of a batch, forked: what the parent keeps of it until it is adopted."""

    node_id: int
    generation: int
    pid: int
    read_ends: tuple[int, int, int]
    started_at: float


def spawn_batch(nodes: list[tuple[int, int]], recipe: Recipe, close_fds: list[int],
                clock: Callable[[], float]) -> list[Forked | OSError]:
    """Fork many nodes (`(node_id, generation)` each) in a row, with as little as can be done
    between two forks; the caller makes the NodeProcesses after the last (`adopt_forked`).

    After a fork every page the parent writes is copied (each child still shares it) at ~3 us
    a page: building objects, registering fds and arming timers between forks cost the first
    start more than the forks did. Each child closes the pipes of the nodes forked before it:
    they come from the lowest free fds, so they mostly extend one run of fds."""
    flush_std_streams()
    runs = fd_runs(recipe.closed_in_nodes(close_fds))
    results: list[Forked | OSError] = []
    for node_id, generation in nodes:
        try:
            pipes = NodePipes.open()
        except OSError as exc:
            results.append(exc)
            continue
        runs = _add_run(runs, pipes.read_ends)
        spec = recipe.spec_with_runs(node_id, generation, pipes.write_ends, runs)
        try:
            pid = os.fork()
        except OSError as exc:
            pipes.close(pipes.read_ends + pipes.write_ends)
            runs = fd_runs([fd for low, high in runs for fd in range(low, high)
                            if fd not in pipes.read_ends])
            results.append(exc)
            continue
        if pid == 0:  # the child
            child.main(spec)
        pipes.close(pipes.write_ends)
        results.append(Forked(node_id, generation, pid, pipes.read_ends, clock()))
    return results


def spawn_first_batch(nodes: list[tuple[int, int]], recipe: Recipe, close_fds: list[int],
                      announce: Callable[[Forked | OSError, int], None]) -> None:
    """In a first start's loader, which has the config and app loaded: fork the whole fleet
    (`(node_id, generation)` each) and `announce` each node (with its slot id) to the
    supervisor, whose children the nodes become when this process exits (it is a child
    subreaper); the nodes wait on a gate until then. The supervisor never imports the app on
    the way to its first READY=1."""
    flush_std_streams()
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    os.set_inheritable(gate_r, True)
    runs = fd_runs(recipe.closed_in_nodes([*close_fds, gate_w]))
    me = os.getpid()
    for node_id, generation in nodes:
        try:
            pipes = NodePipes.open()
        except OSError as exc:
            announce(exc, node_id)
            continue
        spec = recipe.spec_with_runs(node_id, generation, pipes.write_ends,
                                     _add_run(runs, pipes.read_ends), reparent_from=me,
                                     gate_fd=gate_r)
        try:
            pid = os.fork()
        except OSError as exc:
            pipes.close(pipes.read_ends + pipes.write_ends)
            announce(exc, node_id)
            continue
        if pid == 0:  # the child
            child.main(spec)
        pipes.close(pipes.write_ends)
        announce(Forked(node_id, generation, pid, pipes.read_ends, time.monotonic()), node_id)
        pipes.close(pipes.read_ends)  # the supervisor has its own copies now


def _add_run(runs: list[tuple[int, int]], fds: tuple[int, ...]) -> list[tuple[int, int]]:
    """`runs` (see fd_runs) with `fds` added: O(1) when they extend the last run."""
    low, high = min(fds), max(fds) + 1
    if runs and runs[-1][1] == low and high - low == len(fds):
        return [*runs[:-1], (runs[-1][0], high)]
    return fd_runs([*(fd for a, b in runs for fd in range(a, b)), *fds])


def adopt_forked(forked: Forked, recipe: Recipe) -> NodeProcess:
    """The NodeProcess of a node forked in a batch (its pid is ours: not reaped yet)."""
    pidfd = os.pidfd_open(forked.pid)
    return NodeProcess.adopt(forked.node_id, forked.generation, forked.pid, pidfd,
                             forked.read_ends, forked.started_at,
                             is_command=recipe.command is not None)


def spawn_through_intermediate(spec: child.ChildSpec, announce: Callable[[int], None]) -> int:
    """Fork an intermediate process that forks the node, announces its pid and exits, so that
    the node is reparented to the supervisor (a child subreaper). Returns the intermediate's
    pid (the caller reaps it). Runs in a deploy's candidate, never in the supervisor."""
    flush_std_streams()
    intermediate = os.fork()
    if intermediate != 0:
        return intermediate
    try:  # the intermediate: one fork, one message, gone
        node_spec = spec._replace(reparent_from=os.getpid())
        pid = os.fork()
        if pid == 0:
            child.main(node_spec)
        announce(pid)
    except BaseException:
        os._exit(1)
    os._exit(0)
