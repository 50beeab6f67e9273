"""Per-node CPU and memory figures, sampled from the supervisor's loop a few nodes per tick.

CPU: percent of one core between two visits of a node, from usage_usec of its cgroup's cpu.stat,
else utime+stime (/proc/PID/stat) summed over its processes. Memory: memory.current where the
memory controller is delegated, else PSS summed over its processes (/proc/PID/smaps_rollup).
A node's processes: its cgroup.procs, else the node and its descendants (the `children` file of
each of its threads: a few reads per node, where a scan of /proc would read every process of
the host). A double-forked daemon leaves the descendants; only a cgroup keeps it counted.

Bounded by design, for a loop that must never stall: a tick visits at most `per_tick` nodes
(CPU for each: a read or three), and PSS, the expensive read (~0.2 ms for an idle 15 MB node,
more for a big one: the kernel walks its page tables), is rationed by a token bucket to
`memory_share` of one core. And bounded in total, whatever the fleet's size: the ticks are
spaced so that all of it costs at most `share` of one core (a big fleet's figures are then
older: every node is still visited in turn). tick() says when it wants to run next.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import NamedTuple

from swarmd.node.cgroups import CgroupTree, MemorySource

CPU_PERIOD = 20.0  # each node's CPU is read about this often (its window for the percent)
MEMORY_PERIOD = 10.0  # memory no more often than this per node (memory.current: that often)
PER_TICK = 8  # nodes visited per tick: a tick costs ~8 x 40 us, plus rationed PSS reads
MEMORY_SHARE = 0.0005  # of one core, at most, for memory reads (PSS); what sets its pace
MEMORY_BURST = 0.004  # seconds of memory reads a tick may spend when the bucket is full
MIN_INTERVAL = 0.1
# Of one core, at most, for all the sampling: a fleet at rest costs its supervisor about as
# much as its reports do (bench/run.py, idle CPU); more where limits.memory needs fresh PSS.
SHARE = 0.0002
SHARE_FOR_LIMITS = 0.001
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_READ = os.O_RDONLY | os.O_CLOEXEC


class Figures(NamedTuple):
    """What status shows for a node. None: not known yet (CPU needs two visits)."""

    cpu: float | None = None  # percent of one core over the last window
    memory: int | None = None  # bytes
    memory_source: MemorySource | None = None
    cpu_at: float | None = None  # monotonic time of the CPU figure
    memory_at: float | None = None  # monotonic time of the memory figure


class Tick(NamedTuple):
    next_in: float  # seconds until tick() wants to run again
    memory: list[int]  # nodes with a new memory figure: check limits.memory for these


class _Track:
    """One tracked node: its pid and the previous CPU reading."""

    __slots__ = ("pid", "cpu_total", "cpu_read_at", "figures")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_total: float | None = None  # usec at cpu_read_at
        self.cpu_read_at = 0.0
        self.figures = Figures()


class Sampler:
    """Figures of the nodes it tracks. Calls: track() after a fork, forget() at exit, tick()
    from a timer (it returns the delay to the next), figures() for status."""

    def __init__(self, tree: CgroupTree | None, *, cpu_period: float = CPU_PERIOD,
                 memory_period: float = MEMORY_PERIOD, per_tick: int = PER_TICK,
                 memory_share: float = MEMORY_SHARE, memory_burst: float = MEMORY_BURST,
                 share: float = SHARE, proc: str = "/proc",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.tree = tree
        self.cpu_period = cpu_period
        self.memory_period = memory_period
        self.per_tick = per_tick
        self.memory_share = memory_share
        self.memory_burst = memory_burst
        self.share = share
        self.proc = proc
        self._clock = clock  # measures what memory reads cost, for the bucket
        self._tracks: dict[int, _Track] = {}
        self._queue: collections.deque[int] = collections.deque()
        self._tokens = memory_burst
        self._last_tick: float | None = None
        self._memory_cost = 0.0  # seconds per memory read, a moving average

    @property
    def memory_source(self) -> MemorySource:
        if self.tree is not None and self.tree.memory:
            return MemorySource.MEMORY_CURRENT
        return MemorySource.PSS

    def track(self, node_id: int, pid: int, started_at: float | None = None) -> None:
        """A node (new, or a new generation of the slot) to sample from now on. `started_at`
        (the loop's time of its fork): without cgroups its processes' CPU time was 0 then,
        so its first visit already gives a percent (a cgroup's counts its slot's earlier
        nodes too: there the first visit is the baseline)."""
        if node_id not in self._tracks:
            self._queue.append(node_id)
        track = _Track(pid)
        if started_at is not None and self.tree is None:
            track.cpu_total, track.cpu_read_at = 0.0, started_at
        self._tracks[node_id] = track

    def forget(self, node_id: int) -> None:
        """The node is gone and its slot not refilled (a scale-down): stop sampling it."""
        if self._tracks.pop(node_id, None) is not None:
            self._queue.remove(node_id)

    def cpu_seconds(self, node_id: int) -> float:
        """CPU seconds of the node's processes at its last CPU reading (0 before one)."""
        track = self._tracks.get(node_id)
        return track.cpu_total / 1e6 if track is not None and track.cpu_total else 0.0

    def figures(self, node_id: int) -> Figures:
        track = self._tracks.get(node_id)
        return track.figures if track is not None else Figures()

    def interval(self) -> float:
        """Seconds between ticks for every node to be visited once per cpu_period."""
        count = len(self._tracks)
        if count == 0:
            return self.cpu_period
        return max(MIN_INTERVAL, min(self.cpu_period,
                                     self.cpu_period * min(self.per_tick, count) / count))

    def memory_interval(self) -> float:
        """How often each node's memory can be read within memory_share: memory_period, or
        longer when the reads of every node would cost more (PSS of many or big nodes). Nodes
        are then taken in turn, none read twice before every other was read once."""
        affordable = len(self._tracks) * self._memory_cost / self.memory_share
        return max(self.memory_period, affordable)

    def tick(self, now: float) -> Tick:
        """Visit the next few nodes round-robin: CPU for each, memory where due and the bucket
        allows. `now` is the loop's monotonic time."""
        if self._last_tick is not None:
            earned = (now - self._last_tick) * self.memory_share
            self._tokens = min(self.memory_burst, self._tokens + max(0.0, earned))
        self._last_tick = now
        tick_started = self._clock()
        fresh: list[int] = []
        memory_interval = self.memory_interval()
        for _ in range(min(self.per_tick, len(self._queue))):
            node_id = self._queue[0]
            self._queue.rotate(-1)
            track = self._tracks[node_id]
            self._sample_cpu(node_id, track, now)
            due = (track.figures.memory_at is None
                   or now - track.figures.memory_at >= memory_interval)
            if due and self._tokens > 0:
                started = self._clock()
                if self._sample_memory(node_id, track, now):
                    fresh.append(node_id)
                cost = self._clock() - started
                self._tokens -= cost
                self._memory_cost += (cost - self._memory_cost) * (
                    0.2 if self._memory_cost else 1.0)
        spent = self._clock() - tick_started
        return Tick(max(self.interval(), spent / self.share), fresh)

    # ---- one node ------------------------------------------------------------------------

    def _pids(self, node_id: int, track: _Track) -> list[int]:
        if self.tree is not None:
            pids = self.tree.procs(node_id)
            if pids is not None:
                return pids
        return descendants(track.pid, self.proc)

    def _sample_cpu(self, node_id: int, track: _Track, now: float) -> None:
        total: float | None = None
        if self.tree is not None:
            usec = self.tree.cpu_usec(node_id)
            total = float(usec) if usec is not None else None
        if total is None:
            total = cpu_usec_of(self._pids(node_id, track), self.proc)
        if total is None:
            return
        previous, previous_at = track.cpu_total, track.cpu_read_at
        track.cpu_total, track.cpu_read_at = total, now
        if previous is None or now <= previous_at:
            return
        # A process that exited takes its time out of a /proc sum: never below zero.
        percent = max(0.0, total - previous) / ((now - previous_at) * 1e4)
        track.figures = track.figures._replace(cpu=percent, cpu_at=now)

    def _sample_memory(self, node_id: int, track: _Track, now: float) -> bool:
        source = self.memory_source
        memory: int | None = None
        if source is MemorySource.MEMORY_CURRENT:
            assert self.tree is not None
            memory = self.tree.memory_current(node_id)
        if memory is None:
            source = MemorySource.PSS
            memory = pss_of(self._pids(node_id, track), self.proc)
        if memory is None:
            return False
        track.figures = track.figures._replace(memory=memory, memory_source=source,
                                               memory_at=now)
        return True


# ---- /proc readers: os-level reads, a missing process is skipped ---------------------------


def _read(path: str, size: int | None = 4096) -> bytes | None:
    """The file's first `size` bytes (None: all of it); None if it cannot be read."""
    try:
        fd = os.open(path, _READ)
    except OSError:
        return None
    try:
        if size is not None:
            return os.read(fd, size)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def children_of(pid: int | str, proc: str = "/proc",
                size: int | None = 4096) -> list[int] | None:
    """The direct children of `pid` (`self` too), zombies included, through the `children`
    file of each of its threads (a child forked by a thread is listed there, not under the
    main thread), each read up to `size` bytes (None: whole). None if it is gone."""
    try:
        threads = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return None
    found: list[int] = []
    for tid in threads:
        children = _read(f"{proc}/{pid}/task/{tid}/children", size)
        if children:
            found.extend(int(child) for child in children.split())
    return found


def descendants(pid: int, proc: str = "/proc") -> list[int]:
    """`pid` and every process below it (children_of, walked). [] if it is gone."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 4096:  # a fork bomb cannot make this walk endless
        current = todo.pop()
        children = children_of(current, proc)
        if children is None:
            continue
        found.append(current)
        todo.extend(children)
    return found


def cpu_usec_of(pids: list[int], proc: str = "/proc") -> float | None:
    """utime + stime of the processes, in microseconds (clock-tick resolution); None if none
    of them could be read."""
    total, seen = 0, False
    for pid in pids:
        data = _read(f"{proc}/{pid}/stat")
        if not data:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        try:
            total += int(fields[11]) + int(fields[12])
            seen = True
        except (IndexError, ValueError):
            continue
    return total * 1e6 / _CLK_TCK if seen else None


def pss_of(pids: list[int], proc: str = "/proc") -> int | None:
    """Proportional set size of the processes together, in bytes (each shared page counted
    once, split among its sharers); None if none of them could be read."""
    total, seen = 0, False
    for pid in pids:
        data = _read(f"{proc}/{pid}/smaps_rollup")
        if not data:
            continue
        at = data.find(b"\nPss:")
        if at < 0:
            continue
        try:
            total += int(data[at + 5:data.index(b"kB", at)]) * 1024
            seen = True
        except ValueError:
            continue
    return total if seen else None
