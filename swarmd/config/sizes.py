"""Sizes as the config writes them: bytes as an integer, or `512M`, `1G`, `1.5G`, `64K`.

K, M, G and T are powers of 1024, as in systemd's MemoryMax= and the kernel's memory.max
(`Ki`, `Mi`, `Gi`, `Ti` mean the same and are accepted too). `MB`/`GB` are refused rather than
guessed: whether an operator meant 1000 or 1024 is theirs to say, and here it is always 1024.
"""

from __future__ import annotations

import re
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?)|B)?\s*$", re.IGNORECASE)
_DECIMAL_UNIT = re.compile(r"^\s*\d+(?:\.\d+)?\s*[KMGT]B\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_HINT = "expected a size like 512M, 1G or 1048576 (bytes)"


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string like `512M`, `1.5G`, `64Ki`; ValueError if not.

    A fraction is rounded down to whole bytes: `1.5K` is 1536, `0.1K` is 102."""
    if isinstance(value, bool):
        raise ValueError(_HINT)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{_HINT}; a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            number, unit = match.group(1), (match.group(2) or "").upper()
            if "." not in number:  # exact for integers of any size: no float on the way
                return int(number) * _UNITS[unit]
            if not unit:
                raise ValueError(f"{_HINT}; a number of bytes is whole")
            whole, _, fraction = number.partition(".")
            scale = 10 ** len(fraction)
            return (int(whole) * scale + int(fraction)) * _UNITS[unit] // scale
        if _DECIMAL_UNIT.match(value):
            raise ValueError(f"{_HINT}; write {value.strip()[:-1].strip()} without the B "
                             f"(K, M, G are powers of 1024)")
    raise ValueError(_HINT)


def format_size(size: int) -> str:
    """The shortest exact spelling that parse_size reads back: 536870912 -> '512M',
    1610612736 -> '1536M', 1000 -> '1000'. For config values and messages about them."""
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {size}")
    for unit in ("T", "G", "M", "K"):
        factor = _UNITS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def approx_size(size: int) -> str:
    """A figure for people, three significant digits, not exact: 12_582_912 -> '12.0M',
    1_288_490_189 -> '1.20G', 900 -> '900B'. For status columns and journal entries."""
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {size}")
    if size < 1000:
        return f"{size}B"
    value = float(size)
    for unit in ("K", "M", "G", "T"):
        value /= 1024
        if value < 999.5 or unit == "T":  # 1023.9M reads better as 1.00G than as 1024M
            digits = 0 if value >= 99.95 else 1 if value >= 9.995 else 2
            return f"{value:.{digits}f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover
