"""A slot: a stable node id whose process comes and goes; what survives a restart."""

from __future__ import annotations

from swarmd.config.health import HealthTable
from swarmd.loop.timers import Timer
from swarmd.node.process import NodeProcess
from swarmd.supervisor.backoff import Backoff
from swarmd.supervisor.status import NodeRow


class Slot:
    """A stable node id; its process comes and goes, its generation counts the starts."""

    def __init__(self, slot_id: int, backoff: Backoff) -> None:
        self.id = slot_id
        self.generation = -1
        self.proc: NodeProcess | None = None
        self.backoff = backoff
        self.restarts = 0
        self.restart_timer: Timer | None = None
        self.down_reason: str | None = None

    def cancel_restart(self) -> None:
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None

    def row(self, health: HealthTable, now: float, wall: float) -> NodeRow:
        """This slot in `swarmd status`; `now` is monotonic, `wall` the same moment's time()."""
        proc = self.proc
        if proc is None:
            return NodeRow(self.id, None, self.down_reason or "down", None, None,
                           self.restarts, None, max(self.generation, 0))
        code = proc.code
        return NodeRow(self.id, proc.pid, proc.state.value, code,
                       health[code].name if code is not None else None,
                       self.restarts, wall - (now - proc.started_at), proc.generation)
