"""What the fleet looks like: the STATUS= line and the `swarmd status` table."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from swarmd.config.sizes import approx_size


class NodeRow(NamedTuple):
    id: int
    pid: int | None
    state: str  # booting, running, draining, stopping, or why a slot is down
    code: int | None
    health: str | None
    restarts: int
    started: float | None  # wall-clock time the current process started
    generation: int
    cpu: float | None = None  # percent of one core, recent
    memory: int | None = None  # bytes
    memory_source: str | None = None  # memory.current, or pss
    report_age: float | None = None  # seconds since its last health report

    @property
    def healthy(self) -> bool:
        return self.pid is not None and counts_as_healthy(self.code, self.state)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        data = self._asdict()
        now = time.time() if now is None else now
        data["uptime"] = round(now - self.started, 3) if self.started is not None else None
        if self.cpu is not None:
            data["cpu"] = round(self.cpu, 2)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeRow:
        return cls(**{k: data.get(k) for k in cls._fields})


HEALTHY_STATES = ("running", "draining")  # a quieted node draining its work still serves


def counts_as_healthy(code: int | None, state: str) -> bool:
    """The one rule for `<healthy>/<total> healthy`: last code 0, and not booting or going."""
    return code == 0 and state in HEALTHY_STATES


def summary_text(healthy: int, total: int, restarts: int, mode: str) -> str:
    """`3/4 healthy, 2 restarts, quiet`: what `systemctl status` shows (the STATUS= line),
    from the counts alone, so that the loop builds no NodeRow per node for it."""
    text = f"{healthy}/{total} healthy, {restarts} restart{'s' if restarts != 1 else ''}"
    return text if mode == "running" else f"{text}, {mode}"


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d{seconds // 3600 % 24:02d}h"


def format_cpu(percent: float | None) -> str:
    if percent is None:
        return "-"
    return f"{percent:.1f}%" if percent < 100 else f"{percent:.0f}%"


def format_table(rows: list[NodeRow], now: float | None = None) -> str:
    """One row per node, aligned, for a terminal."""
    now = time.time() if now is None else now
    header = ("ID", "PID", "STATE", "HEALTH", "RESTARTS", "GEN", "UPTIME", "CPU", "MEMORY")
    lines = [header]
    for row in rows:
        health = "-" if row.code is None else f"{row.code} {row.health}"
        uptime = None if row.started is None else now - row.started
        lines.append((str(row.id), str(row.pid or "-"), row.state, health, str(row.restarts),
                      str(row.generation), format_uptime(uptime), format_cpu(row.cpu),
                      "-" if row.memory is None else approx_size(row.memory)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines)
