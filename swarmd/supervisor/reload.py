"""A rolling reload: one slot at a time, from RELOADING=1 to READY=1.

Each slot's node is quieted (TSTP), stopped when it exits by itself or after `timeouts.drain`,
and replaced by a node with the new config; the next slot starts only after that new node
reported its first health, so capacity never drops by more than one node. A new node that
fails to boot stops the reload there: the remaining old nodes keep running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swarmd.node.process import NodeProcess
    from swarmd.supervisor.core import Supervisor
    from swarmd.supervisor.slot import Slot

Waiter = Callable[[bool, str], None]


class RollingReload:
    def __init__(self, supervisor: Supervisor, plan: list[int], removed: list[int],
                 waiters: list[Waiter]) -> None:
        self.sup = supervisor
        self.plan = deque(plan)
        self.total = len(plan)
        self.removed = set(removed)
        self.waiters = waiters
        self.current: Slot | None = None
        self.phase = "idle"  # draining | exiting | booting | removing | done
        self.replaced = 0

    @property
    def progress(self) -> str:
        if self.phase == "removing":
            return f"stopping {len(self.removed)} removed slot(s)"
        slot = f"slot {self.current.id}, " if self.current is not None else ""
        return f"{slot}{self.replaced}/{self.total} replaced"

    def step(self) -> None:
        """Move on to the next slot, or finish."""
        while self.plan:
            slot = self.sup.slots[self.plan.popleft()]
            self.current = slot
            proc = slot.proc
            if proc is not None and proc.alive:
                if proc.stop_reason is None:
                    proc.stop_reason = "reload"
                    self.sup.drain(proc)
                    self.phase = "draining"
                else:
                    self.phase = "exiting"  # already on its way out (hung, restart code)
            else:
                self.sup.start(slot)
                self.phase = "booting"
            self.sup.mark_dirty()
            return
        self.current = None
        for slot_id in sorted(self.removed):
            slot = self.sup.slots[slot_id]
            proc = slot.proc
            if proc is None or not proc.alive:
                self.sup.drop_slot(slot)
                self.removed.discard(slot_id)
            elif proc.stop_reason is None:
                proc.stop_reason = "removed"
                self.sup.drain(proc)
        self.phase = "removing"
        self._finish_if_removed()

    def node_exited(self, slot: Slot, proc: NodeProcess) -> bool:
        """True when the reload takes care of this slot; False = normal restart policy."""
        if slot.id in self.removed:
            self.sup.drop_slot(slot)
            self.removed.discard(slot.id)
            self._finish_if_removed()
            return True
        if slot is not self.current:
            return False
        if self.phase in ("draining", "exiting"):
            self.sup.start(slot)
            self.phase = "booting"
            return True
        if self.phase == "booting":
            exit_text = proc.exit.describe() if proc.exit else "exited"
            why = f"{exit_text} ({proc.stop_reason})" if proc.stop_reason else exit_text
            self.finish(False, f"slot {slot.id}: the new node {why} before its first report; "
                               f"the remaining old nodes keep running")
        return False

    def node_reported_first(self, slot: Slot, code: int) -> None:
        if slot is not self.current or self.phase != "booting":
            return
        info = self.sup.config.health[code]
        if info.restarts:
            self.finish(False, f"slot {slot.id}: the new node reported {info.name} ({code}) "
                               f"first; the remaining old nodes keep running")
            return
        self.replaced += 1
        self.step()

    def _finish_if_removed(self) -> None:
        if self.phase == "removing" and not self.removed:
            self.finish(True, f"reloaded: {self.replaced} node(s) replaced")

    def finish(self, ok: bool, message: str) -> None:
        if self.phase == "done":
            return
        self.phase = "done"
        self.sup.reload_finished(self, ok, message)
