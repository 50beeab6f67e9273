"""Durations as the config writes them: seconds as a number, or `500ms`, `2s`, `1.5m`, `1h`."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like `500ms`, `2s`, `1.5m`, `1h`; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 500ms or 2m")
    if isinstance(value, int | float):
        return _finite(float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("expected a duration like 30s, 500ms or 2m")


def _finite(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError("expected a finite duration like 30s, 500ms or 2m")
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
