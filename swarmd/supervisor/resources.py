"""What each node uses and leaves behind, seen from the supervisor: its cgroup, its figures,
what must go when it ends.

Where the unit delegates a cgroup (Delegate=yes), every node lives in `<unit>/node-N` (it moves
itself there: swarmd/node/child.py enter_cgroup), and the supervisor in `<unit>/supervisor`
once the fleet has started (the move costs ~10 ms, so never on the way to READY=1). Without
one (the foreground, a v1-only host), everything works the same from each node's process
group, and from the marks a node's descendants carry in their environment.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from swarmd.node import cgroups
from swarmd.node.figures import SHARE, SHARE_FOR_LIMITS, Figures, Sampler, Tick, children_of

if TYPE_CHECKING:
    from swarmd.node.process import NodeProcess

MARK_ID = b"SWARMD_NODE_ID="
MARK_GENERATION = b"SWARMD_NODE_GENERATION="
MAX_ENVIRON = 1 << 20  # bytes of /proc/PID/environ read to find a stray's marks


class Resources:
    """The cgroup tree (or none), the figures sampler, and the clean-up of a node's end."""

    def __init__(self, setup: cgroups.Setup) -> None:
        self.setup = setup
        self.tree = setup.tree
        self.sampler = Sampler(self.tree)
        self.settled = False  # the supervisor moved into its own leaf, controllers on
        self._oom_at_start: dict[int, int | None] = {}  # pid -> memory.events oom_kill

    @classmethod
    def discover(cls) -> Resources:
        """The unit's cgroup, found (not yet rearranged: see settle)."""
        return cls(cgroups.discover(move=False))

    @classmethod
    def none(cls) -> Resources:
        """No cgroups: process groups and marks only (a fleet built outside `swarmd run`)."""
        return cls(cgroups.Setup(None, cgroups.Off.ROOT, ""))

    @property
    def enabled(self) -> bool:
        return self.tree is not None

    @property
    def base(self) -> str | None:
        return self.tree.base if self.tree is not None else None

    def settle(self, slot_ids: list[int], memory_max: int | None) -> str | None:
        """Once the fleet runs: the supervisor into `<unit>/supervisor` (a cgroup with
        processes cannot hand controllers to its children), the delegated controllers on, and
        a group per slot with its memory.max. Returns a problem line, or None."""
        if self.tree is None or self.settled:
            return None
        self.settled = True
        setup = cgroups.discover(move=True)
        if setup.tree is None:
            return f"cgroups: the supervisor could not move into its own cgroup: {setup.message}"
        self.tree = self.sampler.tree = setup.tree
        for slot_id in slot_ids:
            self.tree.create(slot_id, memory_max)
        if memory_max is not None and not self.tree.memory:
            return ("limits.memory_max is not enforced: the memory controller is not "
                    "delegated to this unit (a cgroup v2 host with Delegate=yes has it); "
                    "limits.memory still recycles a node above it")
        return self.tree.problem

    def add_slot(self, slot_id: int, memory_max: int | None) -> None:
        """A slot added at run time (`swarmd scale`): its group, once the tree is arranged
        (before, settle makes every slot's)."""
        if self.tree is not None and self.settled:
            self.tree.create(slot_id, memory_max)

    def started(self, proc: NodeProcess) -> None:
        """A node forked: sample it; note its cgroup's OOM count (a later rise tells an OOM)."""
        self.sampler.track(proc.id, proc.pid, proc.started_at)
        if self.tree is not None and self.tree.memory:
            self._oom_at_start[proc.pid] = self.tree.oom_kills(proc.id)

    def forget(self, slot_id: int) -> None:
        self.sampler.forget(slot_id)
        if self.tree is not None:
            self.tree.remove(slot_id)

    def figures(self, slot_id: int) -> Figures:
        return self.sampler.figures(slot_id)

    def cpu_seconds(self, slot_id: int, ended: float) -> float:
        """The slot's CPU time since the service started: its cgroup's usage (every
        generation and helper it ever held), else `ended` (what its reaped nodes used) plus
        what the running node's processes used by the last sample."""
        if self.tree is not None:
            usec = self.tree.cpu_usec(slot_id)
            if usec is not None:
                return max(usec / 1e6, ended)
        return ended + self.sampler.cpu_seconds(slot_id)

    def tick(self, now: float, watch_memory: bool = False) -> Tick:
        """Sample the next few nodes; `watch_memory` (limits.memory is set): a larger share of
        a core, so that memory figures stay fresh enough to recycle on."""
        self.sampler.share = SHARE_FOR_LIMITS if watch_memory else SHARE
        return self.sampler.tick(now)

    # ---- a node's end --------------------------------------------------------------------

    def before_reap(self, proc: NodeProcess) -> None:
        """The node is a zombie still, its replacement not forked yet: everything in its
        process group goes now (its zombie keeps the group id from being reused), and
        everything in its cgroup when anything is left there (a read of cgroup.events, ~20 us;
        the write to cgroup.kill costs ~0.7 ms, paid only when the node left something).
        Before the fork, so that the replacement, which moves into the group once it is empty,
        is never in it when it is killed."""
        cgroups.kill_process_group(proc.pid)
        if self.tree is not None and self.tree.populated(proc.id) is not False:
            self.tree.kill(proc.id)

    def oom_killed(self, proc: NodeProcess) -> bool | None:
        """Whether the kernel's OOM killer took it (None: no memory.events to tell)."""
        status = proc.exit
        if status is None:
            return False
        at_start = self._oom_at_start.pop(proc.pid, None)
        now = self.tree.oom_kills(proc.id) if self.tree is not None and self.tree.memory \
            else None
        return cgroups.oom_killed(status.signal, at_start, now, killed_by_swarmd=proc.killed)

    def clean_up(self, proc: NodeProcess, known: set[int]) -> int:
        """What the node left that neither its process group nor its cgroup held (both were
        killed before it was reaped): the supervisor's children (it is a subreaper: orphans
        come to it) that are not `known` and carry this node's marks (a daemon that
        double-forked away before its node moved into its cgroup, then exec'd). Returns how
        many were signalled. Runs after the replacement's fork."""
        count = 0
        for pid in children():
            if pid not in known and _marked(pid, proc.id, proc.generation):
                try:
                    os.kill(pid, signal.SIGKILL)  # ours and not reaped: the pid is its own
                    count += 1
                except ProcessLookupError:
                    pass
        return count

    def stray_of_a_gone_node(self, pid: int, live: dict[int, int]) -> bool:
        """An unknown child whose marks name a node generation that no longer runs (`live`:
        slot id -> generation running now): it outlived its node, which must not happen."""
        marks = _marks(pid)
        return marks is not None and live.get(marks[0]) != marks[1]


def children() -> list[int]:
    """This process's children, zombies included (every one: a node's leftovers may be
    many)."""
    return children_of("self", size=None) or []


def _marks(pid: int) -> tuple[int, int] | None:
    """(slot id, generation) a process inherited from its node's environment, if any."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read(MAX_ENVIRON)
    except OSError:
        return None
    node = generation = None
    for entry in environ.split(b"\0"):
        if entry.startswith(MARK_ID):
            node = entry[len(MARK_ID):]
        elif entry.startswith(MARK_GENERATION):
            generation = entry[len(MARK_GENERATION):]
    try:
        return (int(node), int(generation)) if node and generation else None
    except ValueError:
        return None


def _marked(pid: int, slot_id: int, generation: int) -> bool:
    return _marks(pid) == (slot_id, generation)

