"""App metrics in the supervisor: families by name, series per slot, bounded.

A node's counters and histogram buckets arrive as deltas and are added to its *slot's* series,
so they continue across the node's restarts and never go back. Its gauges are its process's
values: they go when the process ends (node_ended). Families are fleet-wide: one name has one
type for every node (the text format has one TYPE line per name); the first to define it wins
and a conflicting update is refused with a clear event. Each slot and the whole store have a
series cap: a node inventing label values without end is cut off (its new series refused, the
ones it has keep counting) and the store says so once per node process.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Iterator
from typing import NamedTuple

from swarmd.metrics.names import DEFAULT_BUCKETS, HISTOGRAM_SUFFIXES, Kind, format_value
from swarmd.metrics.wire import Declaration, MetricUpdates

NO_HELP = "An app metric of swarmd's nodes (the app gave no help text)."
MAX_FAMILIES = 2048
MAX_EVENTS_PER_NODE = 32  # distinct events told per node process; more are only counted


class Caps(NamedTuple):
    """Series are samples as Prometheus counts them: a histogram costs its buckets + 3."""

    series_per_node: int = 2000
    series: int = 50000


class EventKind(enum.Enum):
    NODE_CAP = "node_series_cap"  # the node reached caps.series_per_node
    TOTAL_CAP = "total_series_cap"  # the store reached caps.series (or MAX_FAMILIES)
    TYPE_CONFLICT = "type_conflict"  # a name used as two types
    NAME_CLASH = "name_clash"  # a name that a histogram's own series use
    UNDECLARED = "undeclared"  # bucket counts for a histogram the node never declared
    BUCKETS = "buckets"  # bucket counts that do not fit, or bounds that changed


class MetricsEvent(NamedTuple):
    """Something the operator should hear about (a journal entry), once per node process."""

    kind: EventKind
    node: int
    family: str
    message: str


class _Series:
    __slots__ = ("head", "value")

    def __init__(self, head: str) -> None:
        self.head = head  # 'jobs_total{node="3",queue="a"}'
        self.value = 0.0


class _Histogram:
    __slots__ = ("bounds", "bucket_heads", "sum_head", "count_head", "counts", "sum", "count")

    def __init__(self, name: str, labels: str, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.bucket_heads = [f'{name}_bucket{{{labels},le="{format_value(b)}"}}'
                             for b in (*bounds, float("inf"))]
        self.sum_head = f"{name}_sum{{{labels}}}"
        self.count_head = f"{name}_count{{{labels}}}"
        self.counts = [0.0] * (len(bounds) + 1)  # not cumulative; the last: above every bound
        self.sum = 0.0
        self.count = 0.0

    def add(self, numbers: list[float]) -> None:
        count, total, *counts = numbers
        self.count += count
        self.sum += total
        mine = self.counts
        for i, n in enumerate(counts):
            mine[i] += n
        mine[-1] += count - sum(counts)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class _Family:
    __slots__ = ("name", "kind", "help", "slots")

    def __init__(self, name: str, kind: Kind, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text or NO_HELP
        self.slots: dict[int, dict[str, _Series | _Histogram]] = {}  # slot -> labels -> series


class _Slot:
    __slots__ = ("series", "buckets", "told", "refused")

    def __init__(self) -> None:
        self.series = 0  # samples held, against caps.series_per_node
        self.buckets: dict[str, tuple[float, ...]] = {}  # histogram -> this node's bounds
        self.told: set[tuple[EventKind, str]] = set()  # events said for this node process
        self.refused = 0  # updates refused (caps, conflicts), ever


def _cost(series: _Series | _Histogram) -> int:
    return 1 if isinstance(series, _Series) else len(series.bounds) + 3


class MetricStore:
    def __init__(self, caps: Caps | None = None) -> None:
        self.caps = caps or Caps()
        self._families: dict[str, _Family] = {}
        self._slots: dict[int, _Slot] = {}
        self._total = 0

    # ---- updates -------------------------------------------------------------------------

    def apply(self, node: int, updates: MetricUpdates) -> list[MetricsEvent]:
        """Add one health batch's metric updates to slot `node`'s series. Returns what the
        operator should be told (usually nothing): at most one event per kind and family per
        node process, however often the node repeats itself."""
        slot = self._slots.get(node)
        if slot is None:
            slot = self._slots[node] = _Slot()
        events: list[MetricsEvent] = []
        for name, declaration in updates.declarations.items():
            self._declare(node, slot, name, declaration, events)
        get = self._series
        for (name, labels), delta in updates.counters.items():
            series = get(node, slot, name, labels, Kind.COUNTER, events)
            if series is not None:
                series.value += delta  # type: ignore[union-attr]
        for (name, labels), value in updates.gauges.items():
            series = get(node, slot, name, labels, Kind.GAUGE, events)
            if series is not None:
                series.value = value  # type: ignore[union-attr]
        for (name, labels), numbers in updates.histograms.items():
            histogram = get(node, slot, name, labels, Kind.HISTOGRAM, events, declared=True)
            if histogram is None:
                continue
            assert isinstance(histogram, _Histogram)
            if len(numbers) - 2 != len(histogram.bounds):
                slot.refused += 1
                self._tell(events, node, slot, EventKind.BUCKETS, name,
                           f"node {node} sent {len(numbers) - 2} bucket counts for histogram "
                           f"{name}, which it declared with {len(histogram.bounds)} bounds: "
                           f"refused")
            else:
                histogram.add(numbers)
        for (name, labels), values in updates.observations.items():
            histogram = get(node, slot, name, labels, Kind.HISTOGRAM, events)
            if histogram is not None:
                for value in values:
                    histogram.observe(value)  # type: ignore[union-attr]
        return events

    def node_ended(self, node: int) -> None:
        """The slot's process is gone: its gauges go with it (its counters and histograms
        stay, for the next process to continue), and its next process may be told again."""
        slot = self._slots.get(node)
        if slot is None:
            return
        slot.told.clear()
        for family in self._families.values():
            if family.kind is Kind.GAUGE:
                self._drop(family, node, slot)

    def drop_node(self, node: int) -> None:
        """The slot itself is gone (scaled down): every series of it goes."""
        slot = self._slots.pop(node, None)
        if slot is not None:
            for family in self._families.values():
                self._drop(family, node, slot)

    def _drop(self, family: _Family, node: int, slot: _Slot) -> None:
        held = family.slots.pop(node, None)
        if held:
            cost = sum(_cost(series) for series in held.values())
            slot.series -= cost
            self._total -= cost

    def _declare(self, node: int, slot: _Slot, name: str, declaration: Declaration,
                 events: list[MetricsEvent]) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._family(node, slot, name, declaration.kind, declaration.help, events)
            if family is None:
                return
        elif family.kind is not declaration.kind:
            self._conflict(events, node, slot, family, declaration.kind)
            return
        elif declaration.help:
            family.help = declaration.help
        if declaration.buckets is not None:
            known = slot.buckets.get(name)
            if known != declaration.buckets:
                slot.buckets[name] = declaration.buckets
                if known is not None and family.slots.get(node):
                    self._drop(family, node, slot)
                    self._tell(events, node, slot, EventKind.BUCKETS, name,
                               f"node {node} declared histogram {name} with other bucket "
                               f"bounds; its series of {name} start again from zero")

    def _family(self, node: int, slot: _Slot, name: str, kind: Kind, help_text: str,
                events: list[MetricsEvent]) -> _Family | None:
        clash = _clash(name, kind, self._families)
        if clash is not None:
            slot.refused += 1
            self._tell(events, node, slot, EventKind.NAME_CLASH, name,
                       f"node {node}'s {kind.value} {name} clashes with {clash}: refused; "
                       f"rename one of them")
            return None
        if len(self._families) >= MAX_FAMILIES:
            slot.refused += 1
            self._tell(events, node, slot, EventKind.TOTAL_CAP, name,
                       f"node {node}'s metric {name} refused: the fleet already has "
                       f"{MAX_FAMILIES} metric names")
            return None
        family = self._families[name] = _Family(name, kind, help_text)
        return family

    def _series(self, node: int, slot: _Slot, name: str, labels: str, kind: Kind,
                events: list[MetricsEvent], declared: bool = False
                ) -> _Series | _Histogram | None:
        family = self._families.get(name)
        if family is not None:
            held = family.slots.get(node)
            if held is not None:
                series = held.get(labels)
                if series is not None and family.kind is kind:
                    return series  # the usual update: two dict lookups
            if family.kind is not kind:
                self._conflict(events, node, slot, family, kind)
                return None
        elif declared:  # bucket counts mean nothing without the node's bounds
            return self._undeclared(events, node, slot, name)
        else:
            family = self._family(node, slot, name, kind, "", events)
            if family is None:
                return None
        bounds = None
        if kind is Kind.HISTOGRAM:
            bounds = slot.buckets.get(name)
            if bounds is None:
                if declared:
                    return self._undeclared(events, node, slot, name)
                bounds = slot.buckets[name] = DEFAULT_BUCKETS
        cost = 1 if bounds is None else len(bounds) + 3
        if slot.series + cost > self.caps.series_per_node:
            slot.refused += 1
            self._tell(events, node, slot, EventKind.NODE_CAP, "",
                       f"node {node} reached {self.caps.series_per_node} metric series "
                       f"(metrics.max_series_per_node): its new series are refused, the "
                       f"others keep counting; a label with unbounded values (an id, a "
                       f"timestamp) is the usual cause, here in {name}")
            return None
        if self._total + cost > self.caps.series:
            slot.refused += 1
            self._tell(events, node, slot, EventKind.TOTAL_CAP, "",
                       f"the fleet reached {self.caps.series} metric series "
                       f"(metrics.max_series): node {node}'s new series of {name} refused")
            return None
        full = f'node="{node}",{labels}' if labels else f'node="{node}"'
        series: _Series | _Histogram = (
            _Series(f"{name}{{{full}}}") if bounds is None else _Histogram(name, full, bounds))
        family.slots.setdefault(node, {})[labels] = series
        slot.series += cost
        self._total += cost
        return series

    def _undeclared(self, events: list[MetricsEvent], node: int, slot: _Slot,
                    name: str) -> None:
        slot.refused += 1
        self._tell(events, node, slot, EventKind.UNDECLARED, name,
                   f"node {node} sent bucket counts for histogram {name} without declaring "
                   f"its bounds first ('t histogram {name} BOUNDS HELP'): refused")

    def _conflict(self, events: list[MetricsEvent], node: int, slot: _Slot, family: _Family,
                  kind: Kind) -> None:
        slot.refused += 1
        self._tell(events, node, slot, EventKind.TYPE_CONFLICT, family.name,
                   f"node {node} sent {family.name} as a {kind.value}, but it is a "
                   f"{family.kind.value} (as first seen in this fleet): refused; one name, "
                   f"one type")

    @staticmethod
    def _tell(events: list[MetricsEvent], node: int, slot: _Slot, kind: EventKind, family: str,
              message: str) -> None:
        key = (kind, family)
        if key not in slot.told and len(slot.told) < MAX_EVENTS_PER_NODE:
            slot.told.add(key)
            events.append(MetricsEvent(kind, node, family, message))

    # ---- reading -------------------------------------------------------------------------

    @property
    def total_series(self) -> int:
        return self._total

    def node_stats(self) -> Iterator[tuple[int, int, int]]:
        """(node, series held, updates refused ever) per slot that sent metrics, by id."""
        for node in sorted(self._slots):
            slot = self._slots[node]
            yield node, slot.series, slot.refused

    def value(self, name: str, node: int, labels: str = "") -> float | None:
        """One counter's or gauge's value (tests, status): None when there is no such series."""
        family = self._families.get(name)
        series = family.slots.get(node, {}).get(labels) if family is not None else None
        return series.value if isinstance(series, _Series) else None

    def render_into(self, out: list[str]) -> None:
        """Append the text format of every family with series: families by name, nodes by
        id, each node's series in the order they first arrived."""
        for name in sorted(self._families):
            family = self._families[name]
            if not family.slots:
                continue
            out.append(f"# HELP {name} {family.help}\n# TYPE {name} {family.kind.value}\n")
            for node in sorted(family.slots):
                held = family.slots[node].values()
                if family.kind is Kind.HISTOGRAM:
                    for histogram in held:
                        _render_histogram(histogram, out)  # type: ignore[arg-type]
                else:
                    out.extend([f"{series.head} {format_value(series.value)}\n"  # type: ignore
                                for series in held])


def _render_histogram(histogram: _Histogram, out: list[str]) -> None:
    running = 0.0
    for head, n in zip(histogram.bucket_heads, histogram.counts, strict=True):
        running += n
        out.append(f"{head} {format_value(running)}\n")
    out.append(f"{histogram.sum_head} {format_value(histogram.sum)}\n"
               f"{histogram.count_head} {format_value(histogram.count)}\n")


def _clash(name: str, kind: Kind, families: dict[str, _Family]) -> str | None:
    """Another family whose series would carry this name, or the other way round."""
    if kind is Kind.HISTOGRAM:
        for suffix in HISTOGRAM_SUFFIXES:
            if name + suffix in families:
                return f"the {families[name + suffix].kind.value} {name + suffix}"
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = families.get(name[:-len(suffix)])
            if base is not None and base.kind is Kind.HISTOGRAM:
                return f"the series of histogram {base.name}"
    return None
