"""The health code table: code -> name, journal priority, action.

Built in: 0 is `healthy`, 1 is `unhealthy` (err, restart); a code missing from the table counts
as `unhealthy` with its number. Internal reasons (`hung`, `exited`, `crash_loop`) are not codes a
node can send, so they live in events, not here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
ACTIONS = ("log", "restart")
HEALTHY = 0
MAX_CODE = 255


def priority_number(name: str) -> int:
    """syslog priority number for a name: 'err' -> 3."""
    return PRIORITIES.index(name)


class HealthCode(NamedTuple):
    code: int
    name: str
    priority: str = "err"
    action: str = "restart"

    @property
    def number(self) -> int:
        """The syslog priority as the journal's PRIORITY field wants it."""
        return priority_number(self.priority)

    @property
    def healthy(self) -> bool:
        return self.code == HEALTHY

    @property
    def restarts(self) -> bool:
        return self.action == "restart" and not self.healthy


_BUILT_IN = {
    0: HealthCode(0, "healthy", "info", "log"),
    1: HealthCode(1, "unhealthy", "err", "restart"),
}


class HealthTable(Mapping[int, HealthCode]):
    """Looks a code up; configured codes override the built-in 1, never 0. Immutable."""

    __slots__ = ("codes",)
    codes: Mapping[int, HealthCode]

    def __init__(self, codes: Mapping[int, HealthCode] | None = None) -> None:
        object.__setattr__(self, "codes", dict(codes or {}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"HealthTable is immutable (tried to set {name!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HealthTable) and self.codes == other.codes

    def __repr__(self) -> str:
        return f"HealthTable({self.codes!r})"

    def __getitem__(self, code: int) -> HealthCode:
        if code == HEALTHY:
            return _BUILT_IN[0]
        found = self.codes.get(code)
        if found is not None:
            return found
        if code == 1:
            return _BUILT_IN[1]
        return HealthCode(code, "unhealthy", "err", "restart")

    def __iter__(self) -> Iterator[int]:
        return iter(sorted({*_BUILT_IN, *self.codes}))

    def __len__(self) -> int:
        return len({*_BUILT_IN, *self.codes})

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.codes.items())))
