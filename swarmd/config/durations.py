"""Durations as the config writes them: seconds as a number, or a string of one or more
number-unit parts as systemd writes them (systemd.time(7)): `500ms`, `2s`, `1.5m`, `5min`,
`1m30s`, `1h 30min`, `2 days`. Whatever format_duration prints, parse_duration reads back."""

from __future__ import annotations

import math
import re
from typing import Any

_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")
_UNITS = {
    **dict.fromkeys(("us", "usec", "µs"), 1e-6),
    **dict.fromkeys(("ms", "msec"), 0.001),
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
_HINT = "expected a duration like 30s, 500ms or 2m"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like `500ms`, `1m30s`, `5min`; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(_HINT)
    if isinstance(value, int | float):
        return _finite(float(value))
    if isinstance(value, str) and len(value) <= 100 and value.strip():
        text = value.strip()
        total, at = 0.0, 0
        while at < len(text):
            match = _PART.match(text, at)
            if match is None or match.group(2) not in _UNITS:
                raise ValueError(_HINT)
            total += float(match.group(1)) * _UNITS[match.group(2)]
            at = match.end()
        return _finite(total)
    raise ValueError(_HINT)


def _finite(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"{_HINT}; a finite one")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for messages: 0.5 -> '500ms', 90 -> '1m30s'."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h" + (f"{minutes}m" if minutes else "") + (f"{rest}s" if rest else "")
