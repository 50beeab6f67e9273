r"""Metric lines on a node's health pipe, next to its health codes.

A health code is a line of digits ("0\n"); a metric line starts with a one-letter keyword and a
space, so one pipe carries both and a shell can write either (`echo 'c jobs_total 1' >&3`):

    t counter NAME [HELP]                 declare a counter (HELP: the rest of the line)
    t gauge NAME [HELP]                   declare a gauge
    t histogram NAME BOUNDS [HELP]        declare a histogram; BOUNDS: 0.1,0.5,1 or - (defaults)
    c NAME[{LABELS}] DELTA                counter: add DELTA (a number >= 0)
    g NAME[{LABELS}] VALUE                gauge: set to VALUE
    o NAME[{LABELS}] VALUE                histogram: one observation
    h NAME[{LABELS}] COUNT SUM N1 .. Nk   histogram: COUNT more observations summing to SUM, Ni of
                                          them in bucket i (not cumulative: Ni counts values in
                                          (bound i-1, bound i]; the rest lie above the last bound)

LABELS is written as in the Prometheus text format, `{queue="a",kind="b"}`, values escaped with
`\\`, `\"` and `\n`; HELP is escaped with `\\` and `\n`. Numbers are decimal floats (`1`,
`0.25`, `1e-3`; gauges may be `nan`, `inf`, `-inf`). A counter name without `_total` gets it.
Counters travel as deltas and histograms as deltas of their buckets, so a restarted node simply
continues its slot's series and a node may send a line as often as it likes; a gauge is its
value. Declarations are optional for counters, gauges and `o` observations (a histogram seen
first through `o` gets the default bounds); `h` lines need the node's declaration first.

Every line is at most MAX_LINE bytes; a batch (what one read of the pipe held) carries at most
MAX_SERIES_PER_BATCH distinct series and MAX_OBSERVATIONS_PER_BATCH `o` values; anything beyond,
and every malformed line, becomes a protocol error message: never an exception.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from swarmd.metrics.names import (
    DEFAULT_BUCKETS,
    MAX_BUCKETS,
    MAX_LABELS,
    MAX_LINE,
    Kind,
    check_buckets,
    check_label_name,
    check_name,
    escape_label_value,
)

MAX_SERIES_PER_BATCH = 4096
MAX_OBSERVATIONS_PER_BATCH = 16384
MAX_DECLARATIONS_PER_BATCH = 1024
MAX_ERRORS_PER_BATCH = 8
_KINDS = {b"counter": Kind.COUNTER, b"gauge": Kind.GAUGE, b"histogram": Kind.HISTOGRAM}
_OP_KIND = {0x63: Kind.COUNTER, 0x67: Kind.GAUGE, 0x6F: Kind.HISTOGRAM, 0x68: Kind.HISTOGRAM}
_VALUE = rb'"(?:[^"\\\n]|\\.)*"'
_PAIR = rb"[a-zA-Z_][a-zA-Z0-9_]*=" + _VALUE
_UPDATE = re.compile(rb"([cgoh]) ([a-zA-Z_][a-zA-Z0-9_]*)(\{(?:" + _PAIR + rb"(?:," + _PAIR
                     + rb")*,?)?\})?[ \t]+(.*?)[ \t\r]*\Z", re.S)
_PAIRS = re.compile(rb'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
_BAD_VALUE_ESCAPE = re.compile(rb'\\[^\\"n]')
_HELP_ESCAPE = re.compile(r"\\(.)?", re.S)
_CACHE = 4096  # label texts and names remembered per pipe: parsed once, not per flush

Key = tuple[str, str]  # (family name, canonical label text: 'kind="b",queue="a"' or '')


class Declaration(NamedTuple):
    kind: Kind
    buckets: tuple[float, ...] | None  # histograms only
    help: str  # escaped for the text format


class MetricUpdates:
    """What one batch said about metrics, coalesced per series: counters and histogram
    buckets summed, the last gauge value kept, observations listed (binned by the store)."""

    __slots__ = ("declarations", "counters", "gauges", "histograms", "observations", "lines",
                 "dropped", "size", "_observed")

    def __init__(self) -> None:
        self.declarations: dict[str, Declaration] = {}
        self.counters: dict[Key, float] = {}
        self.gauges: dict[Key, float] = {}
        self.histograms: dict[Key, list[float]] = {}  # [count, sum, n1 .. nk]
        self.observations: dict[Key, list[float]] = {}
        self.lines = 0  # metric lines read, malformed ones included
        self.dropped = 0  # updates beyond the batch's bounds
        self.size = 0  # series updated (keys of the four dicts)
        self._observed = 0

    def merge(self, other: MetricUpdates) -> None:
        """Fold a later batch of the same pipe into this one (several reads per wake-up)."""
        self.declarations.update(other.declarations)
        for key, delta in other.counters.items():
            self.counters[key] = self.counters.get(key, 0.0) + delta
        self.gauges.update(other.gauges)
        for key, values in other.histograms.items():
            mine = self.histograms.get(key)
            if mine is not None and len(mine) == len(values):
                for i, value in enumerate(values):
                    mine[i] += value
            else:  # a length mismatch is the store's to refuse; the later one stands
                self.histograms[key] = values
        for key, observed in other.observations.items():
            self.observations.setdefault(key, []).extend(observed)
        self.lines += other.lines
        self.dropped += other.dropped
        self.size = (len(self.counters) + len(self.gauges) + len(self.histograms)
                     + len(self.observations))

    def __repr__(self) -> str:
        return (f"MetricUpdates(declarations={self.declarations!r}, counters={self.counters!r}, "
                f"gauges={self.gauges!r}, histograms={self.histograms!r}, "
                f"observations={self.observations!r}, lines={self.lines}, "
                f"dropped={self.dropped})")


def _show(line: bytes) -> str:
    return repr(line[:60]) + ("..." if len(line) > 60 else "")


class MetricLineParser:
    """Turns one pipe's metric lines into MetricUpdates; remembers (bounded) the names and
    label texts it checked, since a node repeats the same series in every flush."""

    def __init__(self) -> None:
        self._labels: dict[tuple[bytes, bool], str] = {}  # (raw text, histogram?) -> canonical
        self._names: dict[tuple[int, bytes], str] = {}
        # b'c jobs_total{q="a"}' -> (op, key): a line "<head> <one number>" whose head passed
        # every check before skips the regex and the label parsing
        self._heads: dict[bytes, tuple[int, Key]] = {}

    def updates(self, lines: list[bytes], errors: list[str]) -> MetricUpdates:
        """A new MetricUpdates of `lines`; problems go to `errors`."""
        updates = MetricUpdates()
        self.parse(lines, updates, errors)
        return updates

    def parse(self, lines: list[bytes], updates: MetricUpdates, errors: list[str]) -> None:
        """Apply `lines` (each a metric line without its newline) to `updates`; every problem
        becomes a message in `errors` (at most MAX_ERRORS_PER_BATCH, then a count)."""
        bad: dict[str, int] = {}
        heads = self._heads
        counters, gauges = updates.counters, updates.gauges
        updates.lines += len(lines)
        for line in lines:
            if line[0] == 0x68:  # h: many numbers after the head
                problem = self._histogram_line(line, updates)
                if problem is not None:
                    bad[problem] = bad.get(problem, 0) + 1
                continue
            head, _, value = line.rpartition(b" ")
            known = heads.get(head)
            if known is not None and b"_" not in value:
                op, key = known
                try:
                    number: float | None = float(value)
                except ValueError:
                    number = None  # the checked path below says what is wrong
                if number is None:
                    pass
                elif op == 0x63:  # c: the usual line
                    if 0 <= number < math.inf:
                        if key in counters:
                            counters[key] += number
                            continue
                        if updates.size < MAX_SERIES_PER_BATCH:
                            counters[key] = number
                            updates.size += 1
                            continue
                elif key in gauges:  # g
                    gauges[key] = number
                    continue
                elif updates.size < MAX_SERIES_PER_BATCH:
                    gauges[key] = number
                    updates.size += 1
                    continue
            problem = self._line(line, updates)
            if problem is not None:
                bad[problem] = bad.get(problem, 0) + 1
        for shown, (problem, count) in enumerate(bad.items()):
            if shown == MAX_ERRORS_PER_BATCH:
                rest = sum(list(bad.values())[shown:])
                errors.append(f"and {rest} more malformed metric lines in this read")
                break
            errors.append(problem + (f" ({count} times)" if count > 1 else ""))
        if updates.dropped:
            errors.append(f"{updates.dropped} metric updates dropped: one read may carry at most "
                          f"{MAX_SERIES_PER_BATCH} series and {MAX_OBSERVATIONS_PER_BATCH} "
                          f"observations; send less or flush more often")

    def _histogram_line(self, line: bytes, updates: MetricUpdates) -> str | None:
        """An `h` line: its head (up to the labels' brace, or the name) is looked up like the
        others' and its numbers checked by _histogram; an unknown head takes _line."""
        end = line.rfind(b"} ") + 1 or line.find(b" ", 2)
        known = self._heads.get(line[:end]) if end > 0 else None
        if known is None or b"_" in line[end:]:
            return self._line(line, updates)
        try:
            numbers = [float(token) for token in line[end:].split()]
        except ValueError:
            return self._line(line, updates)
        return _histogram(known[1][0], known[1], numbers, updates, line)

    def _line(self, line: bytes, updates: MetricUpdates) -> str | None:
        if len(line) > MAX_LINE:
            return f"metric line longer than {MAX_LINE} bytes: {_show(line)}"
        if line[0] == 0x74:  # t
            return self._declaration(line, updates)
        match = _UPDATE.match(line)
        if match is None:
            return (f"malformed metric line {_show(line)}: expected like "
                    f"'c jobs_total{{queue=\"a\"}} 1' (see swarmd.metrics.wire)")
        op_b, name_b, labels_b, rest = match.groups()
        op = op_b[0]
        histogram = op in (0x6F, 0x68)
        name = self._names.get((op, name_b))
        if name is None:
            try:
                name = check_name(name_b.decode("ascii"), _OP_KIND[op])
            except ValueError as exc:
                return f"metric line {_show(line)}: {exc}"
            self._remember(self._names, (op, name_b), name)
        labels = ""
        if labels_b is not None and len(labels_b) > 2:
            labels_key = (labels_b, histogram)
            labels = self._labels.get(labels_key)  # type: ignore[assignment]
            if labels is None:
                try:
                    labels = _canonical_labels(labels_b, histogram)
                except ValueError as exc:
                    return f"metric line {_show(line)}: {exc}"
                self._remember(self._labels, labels_key, labels)
        key = (name, labels)
        try:
            numbers = [_number(token) for token in rest.split()]
        except ValueError:
            return f"metric line {_show(line)}: expected numbers after the series, got {rest!r}"
        if op == 0x68:  # h
            end = line.rfind(b"} ") + 1 or line.find(b" ", 2)
            if line[:end] == line[:match.end(3) if labels_b is not None else match.end(2)]:
                self._remember(self._heads, line[:end], (op, key))  # type: ignore[arg-type]
            return _histogram(name, key, numbers, updates, line)
        if len(numbers) != 1:
            return f"metric line {_show(line)}: expected one number after the series"
        value = numbers[0]
        head = line[:-len(rest) - 1] if rest else b""
        if op != 0x6F and line[len(head):len(head) + 1] == b" " and rest == line[len(head) + 1:]:
            self._remember(self._heads, head, (op, key))  # type: ignore[arg-type]
        if op == 0x63:  # c
            if not 0 <= value < math.inf:
                return f"counter {name}: an increase must be a finite number >= 0, got {value!r}"
            counters = updates.counters
            if key in counters:
                counters[key] += value
            elif updates.size < MAX_SERIES_PER_BATCH:
                counters[key] = value
                updates.size += 1
            else:
                updates.dropped += 1
        elif op == 0x67:  # g
            if key in updates.gauges:
                updates.gauges[key] = value
            elif updates.size < MAX_SERIES_PER_BATCH:
                updates.gauges[key] = value
                updates.size += 1
            else:
                updates.dropped += 1
        else:  # o
            if value != value:
                return f"histogram {name}: cannot observe NaN"
            observed = updates.observations.get(key)
            if updates._observed >= MAX_OBSERVATIONS_PER_BATCH or (
                    observed is None and updates.size >= MAX_SERIES_PER_BATCH):
                updates.dropped += 1
            elif observed is None:
                updates.observations[key] = [value]
                updates.size += 1
                updates._observed += 1
            else:
                observed.append(value)
                updates._observed += 1
        return None

    def _declaration(self, line: bytes, updates: MetricUpdates) -> str | None:
        parts = line.rstrip(b" \t\r").split(b" ", 3)
        kind = _KINDS.get(parts[1]) if len(parts) > 2 else None
        if kind is None:
            return (f"malformed declaration {_show(line)}: expected 't counter|gauge|histogram "
                    f"NAME ...'")
        buckets = None
        if kind is Kind.HISTOGRAM:
            parts = line.rstrip(b" \t\r").split(b" ", 4)
            if len(parts) < 4:
                return (f"declaration {_show(line)}: a histogram needs its bucket bounds, like "
                        f"'t histogram NAME 0.1,1,10 HELP' ('-' for the defaults)")
            try:
                buckets = (DEFAULT_BUCKETS if parts[3] == b"-"
                           else check_buckets(_number(b) for b in parts[3].split(b",")))
            except ValueError as exc:
                return f"declaration {_show(line)}: {exc}"
            help_b = parts[4] if len(parts) > 4 else b""
        else:
            help_b = parts[3] if len(parts) > 3 else b""
        try:
            name = check_name(parts[2].decode("ascii"), kind)
        except (ValueError, UnicodeDecodeError) as exc:
            return f"declaration {_show(line)}: {exc}"
        if name not in updates.declarations and (
                len(updates.declarations) >= MAX_DECLARATIONS_PER_BATCH):
            updates.dropped += 1
            return None
        updates.declarations[name] = Declaration(kind, buckets, _help(help_b))
        return None

    @staticmethod
    def _remember(cache: dict, key: object, value: str) -> None:  # type: ignore[type-arg]
        if len(cache) >= _CACHE:
            cache.clear()  # a node inventing series: start over rather than grow
        cache[key] = value


def _number(token: bytes) -> float:
    if b"_" in token:  # float() takes 1_000; the text format does not
        raise ValueError(token)
    return float(token)


def _histogram(name: str, key: Key, numbers: list[float], updates: MetricUpdates,
               line: bytes) -> str | None:
    if not 3 <= len(numbers) <= MAX_BUCKETS + 2:
        return (f"histogram {name}: expected COUNT SUM and one count per bucket (1 to "
                f"{MAX_BUCKETS}) in {_show(line)}")
    count, total, *counts = numbers
    whole = numbers[:1] + counts
    if min(whole) < 0 or not all(map(float.is_integer, whole)):  # inf and nan are not whole
        return f"histogram {name}: counts must be whole numbers >= 0 in {_show(line)}"
    if sum(counts) > count:
        return f"histogram {name}: the buckets hold more than COUNT observations in {_show(line)}"
    if total != total:
        return f"histogram {name}: SUM is NaN in {_show(line)}"
    mine = updates.histograms.get(key)
    if mine is None:
        if updates.size >= MAX_SERIES_PER_BATCH:
            updates.dropped += 1
            return None
        updates.histograms[key] = numbers
        updates.size += 1
    elif len(mine) != len(numbers):
        return f"histogram {name}: bucket counts of different lengths in one read"
    else:
        for i, value in enumerate(numbers):
            mine[i] += value
    return None


def _canonical_labels(text: bytes, histogram: bool) -> str:
    """'{b="2",a="1"}' -> 'a="1",b="2"': one label set is one series whatever the order."""
    pairs: dict[str, str] = {}
    for match in _PAIRS.finditer(text):
        name_b, value_b = match.groups()
        name = check_label_name(name_b.decode("ascii"),
                                Kind.HISTOGRAM if histogram else Kind.COUNTER)
        if name in pairs:
            raise ValueError(f"label {name} given twice")
        if _BAD_VALUE_ESCAPE.search(value_b.replace(b"\\\\", b"")):
            raise ValueError(f"label {name}: a value may only escape \\\\, \\\" and \\n")
        try:
            pairs[name] = value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"label {name}: the value is not UTF-8") from None
    if len(pairs) > MAX_LABELS:
        raise ValueError(f"{len(pairs)} labels; at most {MAX_LABELS}")
    return ",".join(f'{name}="{pairs[name]}"' for name in sorted(pairs))


def _help(raw: bytes) -> str:
    """HELP text as the text format wants it: only \\\\ and \\n escapes (others doubled)."""
    text = raw.decode("utf-8", "replace")
    if "\\" not in text:
        return text
    return _HELP_ESCAPE.sub(lambda m: m.group(0) if m.group(1) in ("\\", "n")
                            else "\\\\" + (m.group(1) or ""), text)


# ---- the node's side: the same lines, made once per series ---------------------------------

def declaration_line(kind: Kind, name: str, buckets: tuple[float, ...] | None,
                     help_text: str) -> bytes:
    escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    bounds = "" if buckets is None else ",".join(repr(b) for b in buckets) + " "
    return f"t {kind.value} {name} {bounds}{escaped}\n".encode()


def series_prefix(kind: Kind, name: str, labels: dict[str, str]) -> bytes:
    """b'c jobs_total{queue="a"} ': the part of an update line that never changes."""
    op = {Kind.COUNTER: "c", Kind.GAUGE: "g", Kind.HISTOGRAM: "h"}[kind]
    if not labels:
        return f"{op} {name} ".encode()
    text = ",".join(f'{label}="{escape_label_value(labels[label])}"' for label in sorted(labels))
    return f"{op} {name}{{{text}}} ".encode()
