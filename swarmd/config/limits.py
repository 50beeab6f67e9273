"""The `limits:` section: memory (recycle above it), memory_max (the cgroup's hard bound) and
lifetime (recycle after it). Each is off unless given.

    limits:
      memory: 512M      # PSS or memory.current above it: recycled, not failed
      memory_max: 1G    # memory.max of the node's cgroup, where the memory controller is ours
      lifetime: 6h      # recycled after this long, up to 10 % sooner per slot
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from swarmd.config.durations import parse_duration
from swarmd.config.sizes import format_size, parse_size

if TYPE_CHECKING:  # the package imports this module: no import of it at run time
    from swarmd.config.checker import Checker

KEYS = ("memory", "memory_max", "lifetime")
# Below this no Python process runs at all: a bare number this small is a forgotten unit
# (`memory: 512` is 512 bytes), which would recycle or kill every node as it starts.
MIN_MEMORY = 1 << 20
MIN_LIFETIME = 1.0  # a node younger than this has not booted; a recycle loop, not a bound


class Limits(NamedTuple):
    memory: int | None = None  # bytes
    memory_max: int | None = None  # bytes
    lifetime: float | None = None  # seconds

    @property
    def active(self) -> bool:
        """Whether any limit is set: nothing to sample for bounds otherwise."""
        return any(value is not None for value in self)


def check_limits(data: Any, c: Checker, prefix: str = "limits") -> Limits:
    """Limits from the `limits` value of the config (None when absent); every problem goes to
    the checker with its key path, and a key with a problem stays off."""
    section: Mapping[str, Any] = c.mapping(data, prefix)
    c.unknown_keys(section, KEYS, prefix + ".")
    memory = _size(section, "memory", prefix, c)
    memory_max = _size(section, "memory_max", prefix, c)
    lifetime = _lifetime(section, prefix, c)
    if memory is not None and memory_max is not None and memory_max < memory:
        c.problem(f"{prefix}.memory_max",
                  f"{format_size(memory_max)} is below {prefix}.memory ({format_size(memory)}): "
                  f"the kernel would kill a node before it could be recycled; raise memory_max "
                  f"or lower memory")
    return Limits(memory=memory, memory_max=memory_max, lifetime=lifetime)


def _size(section: Mapping[str, Any], key: str, prefix: str, c: Checker) -> int | None:
    if key not in section or section[key] is None:
        return None
    value = section[key]
    path = f"{prefix}.{key}"
    try:
        size = parse_size(value)
    except ValueError as exc:
        c.problem(path, f"{exc}, got {_describe(value)}")
        return None
    if size < MIN_MEMORY:
        unit_hint = f"; did you mean {value}M?" if isinstance(value, int) and value > 0 else ""
        c.problem(path, f"must be at least 1M, got {_describe(value)} ({size} bytes){unit_hint}")
        return None
    return size


def _lifetime(section: Mapping[str, Any], prefix: str, c: Checker) -> float | None:
    if "lifetime" not in section or section["lifetime"] is None:
        return None
    value = section["lifetime"]
    path = f"{prefix}.lifetime"
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        c.problem(path, f"{exc}, got {_describe(value)}")
        return None
    if seconds < MIN_LIFETIME:
        c.problem(path, f"must be at least 1s, got {_describe(value)}; leave it out for no "
                        f"lifetime limit")
        return None
    return seconds


def _describe(value: Any) -> str:
    if isinstance(value, bool | int | float | str):
        return repr(value)
    return f"a {type(value).__name__}"
