"""ConfigError and the checker that collects one readable line per problem.

Apart from swarmd/config/__init__.py so that the validation of one section can live in a module
of its own (swarmd/config/output.py) and still report its problems the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmd.config.durations import parse_duration

MAX_SHOWN = 60  # characters of a value or key a message shows; the rest is "..."


class ConfigError(Exception):
    """A config that must not be used; `problems` holds one readable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Source:
    """Where each key path stands in the YAML text, and what was written there."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}  # path (or "key:" + path) -> line
        self.texts: dict[str, str] = {}  # path -> scalar text as written
        self.duplicates: list[str] = []


def printable(text: str) -> str:
    """`text` with what a terminal would not show as written (newlines, NUL, lone surrogates,
    escapes) spelled as Python escapes: every problem stays one line that can be printed."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(value: Any) -> str:
    """A value as a message shows it: repr of a scalar (cut), "a list" for anything else."""
    if value is None:
        return "nothing"
    if isinstance(value, bool | int | float | str):
        return printable(shorten(repr(value)))
    return f"a {type(value).__name__}"


class Checker:
    """Collects problems while reading; each is one line with key path and YAML line."""

    def __init__(self, path: str, source: Source | None = None) -> None:
        self.path = path
        self.source = source or Source()
        self.problems: list[str] = []

    def line_of(self, key: str, at_key: bool = False) -> int | None:
        """The key's line, else its nearest written parent's (a missing key has none)."""
        parts = key.split(".")
        while parts:
            path = ".".join(parts)
            line = self.source.lines.get(("key:" if at_key else "") + path)
            if line is None:
                line = self.source.lines.get("key:" + path)
            if line is not None:
                return line
            parts.pop()
        return None

    def problem(self, key: str, message: str, *, at_key: bool = False) -> None:
        line = self.line_of(key, at_key)
        where = f"{self.path}:{line}" if line else self.path
        # a key can be anything the file holds (a megabyte, a newline): shown cut and escaped
        self.problems.append(printable(f"{where}: {shorten(key, 2 * MAX_SHOWN)}: {message}"))

    def unknown_keys(self, data: Mapping[Any, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in data:
            if key not in known:
                self.problem(f"{prefix}{key}", f"unknown key (known keys: {', '.join(known)})",
                             at_key=True)

    def mapping(self, data: Any, key: str) -> Mapping[Any, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problem(key, f"expected a mapping, got {describe(data)}")
            return {}
        return data

    def duration(self, data: Mapping[Any, Any], key: str, prefix: str, default: float,
                 *, allow_zero: bool = False) -> float:
        if key not in data:
            return default
        try:
            seconds = parse_duration(data[key])
        except ValueError as exc:
            self.problem(prefix + key, f"{exc}, got {describe(data[key])}")
            return default
        if seconds < 0 or (seconds == 0 and not allow_zero):
            self.problem(prefix + key, f"must be {'>= 0' if allow_zero else '> 0'}, "
                                       f"got {describe(data[key])}")
            return default
        return seconds

    def integer(self, data: Mapping[Any, Any], key: str, prefix: str, default: int,
                low: int, high: int | None = None) -> int:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(prefix + key, f"expected an integer, got {describe(value)}")
            return default
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            self.problem(prefix + key, f"must be {bound}, got {describe(value)}")
            return default
        return value
