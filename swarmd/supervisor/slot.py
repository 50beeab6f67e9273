"""A slot: a stable node id whose process comes and goes; what survives a restart."""

from __future__ import annotations

import enum

from swarmd.config.health import HealthTable
from swarmd.loop.timers import Timer
from swarmd.node.process import NodeProcess
from swarmd.supervisor.backoff import Backoff
from swarmd.supervisor.status import NodeRow


class DownReason(enum.Enum):
    """Why a slot has no process."""

    RESTARTING = "restarting"  # waiting out its backoff delay
    QUIET = "quiet"  # swarmd is quiet: nothing is restarted
    DEPLOYING = "deploying"  # a deploy is about to start its new node


class Slot:
    """A stable node id; its process comes and goes, its generation counts the starts."""

    def __init__(self, slot_id: int, backoff: Backoff) -> None:
        self.id = slot_id
        self.generation = -1
        self.proc: NodeProcess | None = None
        self.backoff = backoff
        self.restarts = 0
        self.restart_timer: Timer | None = None
        self.restart_at: float | None = None  # monotonic time of the pending restart
        self.down_reason: DownReason | None = None

    def cancel_restart(self) -> None:
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None
        self.restart_at = None

    def row(self, health: HealthTable, now: float, wall: float) -> NodeRow:
        """This slot in `swarmd status`; `now` is monotonic, `wall` the same moment's time()."""
        proc = self.proc
        if proc is None:
            state = self.down_reason.value if self.down_reason is not None else "down"
            return NodeRow(self.id, None, state, None, None, self.restarts, None,
                           max(self.generation, 0))
        code = proc.code
        age = None if proc.last_report_at is None else round(now - proc.last_report_at, 3)
        return NodeRow(self.id, proc.pid, proc.state.value, code,
                       health[code].name if code is not None else None,
                       self.restarts, wall - (now - proc.started_at), proc.generation,
                       report_age=age)
