"""The fleet's upkeep while it runs: its cgroups settled once it is up, each node's figures
sampled a few nodes per tick, and recycles rolled one slot at a time.

Owned by the supervisor, which tells it when the fleet is up (READY=1), when a slot's node
first reported, and when a deploy, a quiet or a stop takes over every slot; it calls down to
the fleet (recycle) and to the resources (settle, tick).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from swarmd.loop.timers import Timer, Timers
from swarmd.supervisor.fleet import Fleet
from swarmd.supervisor.recycle import Recycle, RecycleQueue, to_recycle
from swarmd.supervisor.resources import Resources
from swarmd.supervisor.slot import Slot

Emit = Callable[..., None]


class Upkeep:
    """Sampling, settling and rolling recycles; paused while `busy()` (a deploy, a quiet, a
    stop: they replace or stop every node themselves)."""

    def __init__(self, fleet: Fleet, resources: Resources, *, timers: Timers,
                 clock: Callable[[], float], emit: Emit, busy: Callable[[], bool]) -> None:
        self.fleet = fleet
        self.resources = resources
        self.timers = timers
        self.clock = clock
        self.emit = emit
        self.busy = busy
        self.queue = RecycleQueue()
        self._tick_timer: Timer | None = None
        self._guard: Timer | None = None  # a recycle that never completes does not stall others
        self.problem: str | None = None

    def begin(self) -> None:
        """The fleet is up (READY=1 went out): the cgroup tree is arranged now, off the path to
        READY=1, and the figures are sampled from now on."""
        problem = self.resources.settle(sorted(self.fleet.slots),
                                        self.fleet.config.limits.memory_max)
        if problem is not None:
            self.problem = problem
            self.emit("swarmd.resources", problem, priority=4)
        if self._tick_timer is None:
            self._tick_timer = self.timers.call_at(self.clock(), self._tick)

    def close(self) -> None:
        for timer in (self._tick_timer, self._guard):
            if timer is not None:
                timer.cancel()
        self._tick_timer = self._guard = None

    def _tick(self) -> None:
        now = self.clock()
        limits = self.fleet.config.limits
        tick = self.resources.tick(now, watch_memory=limits.memory is not None)
        if limits.memory is not None:
            for slot_id in tick.memory:
                slot = self.fleet.slots.get(slot_id)
                proc = slot.proc if slot is not None else None
                if proc is None or proc.stop_reason is not None:
                    continue
                recycle = to_recycle(self.resources.figures(slot_id).memory,
                                     now - proc.started_at, limits, slot_id, proc.generation)
                if recycle is not None:
                    self.due(slot_id, recycle)
        self._tick_timer = self.timers.call_at(now + tick.next_in, self._tick)

    # ---- recycles --------------------------------------------------------------------------

    def due(self, slot_id: int, recycle: Recycle) -> None:
        """A slot's node is due for a recycle: queued, and started when its turn comes."""
        self.queue.due(slot_id, recycle)
        self.advance()

    def first_report(self, slot: Slot) -> None:
        """A slot's new node reported: if it was the one being recycled, the next may go."""
        if self.queue.done(slot.id):
            self._cancel_guard()
            self.advance()

    def take_over(self) -> None:
        """A deploy, a quiet or a stop replaces or stops every node: what was due is moot."""
        self.queue.clear()
        self._cancel_guard()

    def advance(self) -> None:
        """Start the next recycle if none is under way and nothing else runs the fleet."""
        while not self.busy():
            step = self.queue.next()
            if step is None:
                return
            slot_id, recycle = step
            slot = self.fleet.slots.get(slot_id)
            if slot is not None and self.fleet.recycle(slot, recycle):
                config = self.fleet.config
                timeouts = config.timeouts
                # drain, TERM, KILL, a new node's boot: past all that, the roll goes on anyway
                limit = timeouts.drain + timeouts.shutdown + timeouts.boot + 1.0
                self._guard = self.timers.call_at(self.clock() + limit,
                                                  partial(self._gave_up_on, slot_id))
                return
            self.queue.done(slot_id)  # gone, or already going: nothing to wait for

    def _gave_up_on(self, slot_id: int) -> None:
        self._guard = None
        if self.queue.done(slot_id):
            self.advance()

    def _cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
