"""Deadlines for the supervision loop: a heap of callbacks, cancelled lazily.

The loop sleeps in its poller exactly until the next deadline, so nothing is sleep-polled. A
cancelled timer lets go of its callback at once (a dead node's timers hold the node's objects
through their closures), and the heap is rebuilt without the cancelled ones when they are most
of it: a crash loop with long timeouts cancels a boot deadline per restart, each of which would
otherwise stay in the heap until its time came.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

COMPACT_AT = 256  # a heap smaller than this is never rebuilt: popping cancelled ones is cheap


def _nothing() -> None:
    """What a cancelled timer calls: nothing (its callback is gone)."""


class Timer:
    __slots__ = ("when", "callback", "cancelled", "_owner")

    def __init__(self, when: float, callback: Callable[[], None], owner: Timers) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._owner: Timers | None = owner  # None once out of the heap

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = _nothing
        owner = self._owner
        if owner is not None:
            owner._cancelled_in_heap += 1
            owner._maybe_compact()


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled_in_heap = 0

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback, self)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def _pop(self) -> Timer:
        timer = heapq.heappop(self._heap)[2]
        timer._owner = None
        if timer.cancelled:
            self._cancelled_in_heap -= 1
        return timer

    def _maybe_compact(self) -> None:
        heap = self._heap
        if len(heap) >= COMPACT_AT and self._cancelled_in_heap * 2 > len(heap):
            kept = []
            for entry in heap:
                if entry[2].cancelled:
                    entry[2]._owner = None
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            self._heap = kept
            self._cancelled_in_heap = 0

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            self._pop()
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> int:
        """Run every timer due by `now`; returns how many ran."""
        ran = 0
        while self._heap and self._heap[0][0] <= now:
            timer = self._pop()
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()
                timer.callback = _nothing
                ran += 1
        return ran

    def __len__(self) -> int:
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def held(self) -> int:
        """Entries in the heap, cancelled ones included (what it costs in memory)."""
        return len(self._heap)
