"""When a node is recycled (replaced in a rolling way, never counted as a failure), and why.

Pure functions of a node's figures, age and exit, and the config: the fleet asks, acts, and
writes `node.recycled` with the reason and the figure.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from swarmd.config.durations import format_duration
from swarmd.config.limits import Limits
from swarmd.config.sizes import approx_size, format_size

LIFETIME_SPREAD = 0.10  # lifetimes are cut by up to this share, so slots do not expire together
_MASK = (1 << 64) - 1


class RecycleReason(enum.Enum):
    MEMORY = "memory"  # above limits.memory
    LIFETIME = "lifetime"  # older than limits.lifetime (less its slot's spread)
    CLEAN_EXIT = "clean_exit"  # returned 0 by itself after at least restart.reset_after


class Recycle(NamedTuple):
    reason: RecycleReason
    figure: str  # for the journal entry: "memory 612M above limits.memory 512M"


def lifetime_of(slot: int, generation: int, lifetime: float) -> float:
    """The lifetime of one node: `lifetime` cut by 0 to 10 %, the same for the same slot and
    generation (tests and restarts agree), different between slots, so a fleet started at
    once is not recycled at once. A mix of the two numbers (splitmix64), not hash(): stable
    across processes and Python versions, and no import."""
    z = (slot * 0x9E3779B97F4A7C15 + generation * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return lifetime * (1.0 - LIFETIME_SPREAD * (z / _MASK))


def to_recycle(memory: int | None, age: float, limits: Limits, slot: int,
               generation: int) -> Recycle | None:
    """Whether a running node is due for a recycle, and why: memory (bytes, its latest figure;
    None: not known yet) above limits.memory, or age (seconds since its fork) at its lifetime.
    Memory first: it is the urgent one."""
    if limits.memory is not None and memory is not None and memory > limits.memory:
        return Recycle(RecycleReason.MEMORY, f"memory {approx_size(memory)} above "
                                             f"limits.memory {format_size(limits.memory)}")
    if limits.lifetime is not None:
        lifetime = lifetime_of(slot, generation, limits.lifetime)
        if age >= lifetime:
            return Recycle(RecycleReason.LIFETIME, f"ran {format_duration(age)}, lifetime "
                                                   f"{format_duration(lifetime)} (limits.lifetime "
                                                   f"{format_duration(limits.lifetime)})")
    return None


def exit_is_recycle(exit_code: int | None, ran_for: float, reset_after: float,
                    asked_to_stop: bool) -> Recycle | None:
    """A node that returned 0 by itself (not asked to stop) after running at least
    restart.reset_after has done its work (a worker that serves N jobs, then exits): it is
    replaced like a recycle, not counted as a failure. Earlier, or with any other status, it
    stays a failure (a crash loop that exits 0 is still a loop)."""
    if exit_code != 0 or asked_to_stop or ran_for < reset_after:
        return None
    return Recycle(RecycleReason.CLEAN_EXIT, f"exited 0 by itself after "
                                             f"{format_duration(ran_for)} (restart.reset_after "
                                             f"{format_duration(reset_after)})")


class RecycleQueue:
    """Recycles roll: one slot at a time, the next after the new node's first report, so the
    fleet is never more than one node short for them; none while a deploy, a quiet or a stop
    runs (they take over every slot). A slot due twice is queued once."""

    def __init__(self) -> None:
        self.waiting: dict[int, Recycle] = {}  # slot -> why, in the order they came
        self.current: int | None = None  # the slot being recycled

    def due(self, slot_id: int, recycle: Recycle) -> None:
        if slot_id != self.current:
            self.waiting.setdefault(slot_id, recycle)

    def next(self) -> tuple[int, Recycle] | None:
        """The next slot to recycle now, if none is under way."""
        if self.current is not None or not self.waiting:
            return None
        slot_id = next(iter(self.waiting))
        self.current = slot_id
        return slot_id, self.waiting.pop(slot_id)

    def done(self, slot_id: int) -> bool:
        """The slot's new node reported (or the slot is gone): True when it was the one."""
        if slot_id != self.current:
            return False
        self.current = None
        return True

    def clear(self) -> None:
        self.waiting.clear()
        self.current = None
