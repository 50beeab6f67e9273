"""`node.metrics` inside a node: counters, gauges and histograms that cost no syscall to update.

An update only changes numbers in memory under one lock (about a quarter of a microsecond, see
bench/metrics_node.py) and marks its series dirty. `flush()` turns what changed since the last
flush into wire lines (swarmd.metrics.wire): counter and histogram deltas, gauge values, and the
declaration of every metric made since. The Node writes those bytes together with its health
code in one write; `sent(n)` then says how many bytes went out, and whatever did not goes back
into the series (a full pipe loses no increment, and what waits stays one line per series, not
a growing buffer).
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from swarmd.metrics import wire
from swarmd.metrics.names import (
    DEFAULT_BUCKETS,
    Kind,
    check_buckets,
    check_label_names,
    check_name,
)

_INF = math.inf


class _Item:
    """Something flush() can turn into a line and sent() can put back."""

    __slots__ = ()

    def _take(self) -> tuple[bytes, Any]:
        raise NotImplementedError

    def _restore(self, undo: Any) -> bool:
        """Put an unsent line's content back; True when the item must be queued again."""
        raise NotImplementedError


class _Declaration(_Item):
    __slots__ = ("line", "_dirty")

    def __init__(self, line: bytes) -> None:
        self.line = line
        self._dirty = True

    def _take(self) -> tuple[bytes, Any]:
        self._dirty = False
        return self.line, None

    def _restore(self, undo: Any) -> bool:
        queue = not self._dirty
        self._dirty = True
        return queue


class _Metric(_Item):
    """One series (a metric without labels, or one child of .labels()), or a labelled family,
    whose own update methods refuse to run."""

    __slots__ = ("_registry", "_lock", "_dirty", "_prefix", "_labelnames", "_children",
                 "name", "kind")

    def __init__(self, registry: Registry, kind: Kind, name: str, prefix: bytes,
                 labelnames: tuple[str, ...] = ()) -> None:
        self._registry = registry
        self._lock = registry._lock
        self._dirty = False
        self._prefix = prefix
        self._labelnames = labelnames
        self._children: dict[tuple[str, ...], _Metric] = {}
        self.name = name
        self.kind = kind

    def labels(self, *values: object, **named: object) -> Any:
        """The child for these label values (made once, then looked up)."""
        try:
            child = self._children.get(values)  # type: ignore[arg-type]
        except TypeError:  # an unhashable value: it is made a string below
            child = None
        if child is not None:  # the usual call: values seen before, as given
            return child
        if named:
            if values:
                raise ValueError(f"{self.name}: give label values by position or by name, "
                                 f"not both")
            if set(named) != set(self._labelnames):
                raise ValueError(f"{self.name}: expected labels {self._labelnames}, "
                                 f"got {tuple(named)}")
            values = tuple(named[label] for label in self._labelnames)
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is not None:
            return child
        if not self._labelnames:
            raise ValueError(f"{self.name} has no labels; call its methods directly")
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self.name}: expected {len(self._labelnames)} label values "
                             f"{self._labelnames}, got {len(key)}")
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._child(dict(zip(self._labelnames, key, strict=True)))
                self._children[key] = child
            if values != key and not named:  # labels(7) finds the child of "7" at once
                try:
                    self._children[values] = child  # type: ignore[index]
                except TypeError:  # unhashable values: the slower way each time
                    pass
        return child

    def _child(self, labels: dict[str, str]) -> _Metric:
        raise NotImplementedError

    def _mark(self) -> None:
        """Under the lock: queue this series for the next flush."""
        self._dirty = True
        self._registry._queue.append(self)

    def _unlabelled(self) -> None:
        raise ValueError(f"{self.name} has labels {self._labelnames}: update one child, "
                         f"{self.name}.labels(...)")

    def _reset_after_fork(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._dirty = False
        self._zero()
        for child in self._children.values():
            child._reset_after_fork(lock)

    def _zero(self) -> None:
        pass


class Counter(_Metric):
    """Only goes up; its slot's series continues across the node's restarts."""

    __slots__ = ("_delta",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delta: float = 0

    def inc(self, amount: float = 1) -> None:
        if not 0 <= amount < _INF:
            raise ValueError(f"{self.name}: a counter goes up by a finite amount >= 0, "
                             f"got {amount!r}")
        if self._labelnames:
            self._unlabelled()
        with self._lock:
            self._delta += amount
            if not self._dirty:
                self._dirty = True
                self._registry._queue.append(self)

    def _child(self, labels: dict[str, str]) -> Counter:
        return Counter(self._registry, self.kind, self.name,
                       wire.series_prefix(self.kind, self.name, labels))

    def _take(self) -> tuple[bytes, Any]:
        delta, self._delta = self._delta, 0
        self._dirty = False
        return b"%s%r\n" % (self._prefix, delta), delta

    def _restore(self, undo: Any) -> bool:
        self._delta += undo
        queue = not self._dirty
        self._dirty = True
        return queue

    def _zero(self) -> None:
        self._delta = 0


class Gauge(_Metric):
    """A value that goes up and down; the supervisor shows the last one sent."""

    __slots__ = ("_value",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._value: float = 0

    def set(self, value: float) -> None:
        value = float(value)
        if self._labelnames:
            self._unlabelled()
        with self._lock:
            self._value = value
            if not self._dirty:
                self._dirty = True
                self._registry._queue.append(self)

    def inc(self, amount: float = 1) -> None:
        if self._labelnames:
            self._unlabelled()
        with self._lock:
            self._value += amount
            if not self._dirty:
                self._dirty = True
                self._registry._queue.append(self)

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)

    def _child(self, labels: dict[str, str]) -> Gauge:
        return Gauge(self._registry, self.kind, self.name,
                     wire.series_prefix(self.kind, self.name, labels))

    def _take(self) -> tuple[bytes, Any]:
        self._dirty = False
        return b"%s%r\n" % (self._prefix, self._value), None

    def _restore(self, undo: Any) -> bool:  # the value now is what is owed
        queue = not self._dirty
        self._dirty = True
        return queue


class Histogram(_Metric):
    """Observations counted into fixed buckets in the node; bucket deltas travel."""

    __slots__ = ("_bounds", "_counts", "_sum", "_count")

    def __init__(self, registry: Registry, kind: Kind, name: str, prefix: bytes,
                 labelnames: tuple[str, ...] = (), bounds: tuple[float, ...] = ()) -> None:
        super().__init__(registry, kind, name, prefix, labelnames)
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self._sum: float = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        if value != value:
            raise ValueError(f"{self.name}: cannot observe NaN")
        if self._labelnames:
            self._unlabelled()
        with self._lock:
            self._counts[bisect_left(self._bounds, value)] += 1
            self._sum += value
            self._count += 1
            if not self._dirty:
                self._dirty = True
                self._registry._queue.append(self)

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the `with` block took."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start)

    def _child(self, labels: dict[str, str]) -> Histogram:
        return Histogram(self._registry, self.kind, self.name,
                         wire.series_prefix(self.kind, self.name, labels), (), self._bounds)

    def _take(self) -> tuple[bytes, Any]:
        undo = (self._count, self._sum, self._counts)
        line = b"%s%d %r %s\n" % (self._prefix, self._count, self._sum,
                                  b" ".join(b"%d" % n for n in self._counts[:-1]))
        self._zero()
        self._dirty = False
        return line, undo

    def _restore(self, undo: Any) -> bool:
        count, total, counts = undo
        self._count += count
        self._sum += total
        for i, n in enumerate(counts):
            self._counts[i] += n
        queue = not self._dirty
        self._dirty = True
        return queue

    def _zero(self) -> None:
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._count = 0


class Registry:
    """What an app gets as `node.metrics`."""

    def __init__(self, on_first_metric: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Item] = []  # dirty items in the order they became dirty
        self._taken: list[tuple[_Item, Any, bytes]] = []  # the last flush, until sent()
        self._metrics: dict[str, _Metric] = {}
        self._definitions: dict[str, tuple[Kind, tuple[str, ...], tuple[float, ...] | None]] = {}
        self._on_first_metric = on_first_metric
        me = weakref.ref(self)  # the fork hook must not keep a registry alive
        os.register_at_fork(after_in_child=lambda: _reset_in_child(me))

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._make(Counter, Kind.COUNTER, name, help, labelnames, None)  # type: ignore

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._make(Gauge, Kind.GAUGE, name, help, labelnames, None)  # type: ignore

    def histogram(self, name: str, help: str, buckets: Sequence[float] = DEFAULT_BUCKETS,
                  labelnames: Sequence[str] = ()) -> Histogram:
        return self._make(Histogram, Kind.HISTOGRAM, name, help, labelnames,  # type: ignore
                          check_buckets(buckets))

    def _make(self, cls: type[_Metric], kind: Kind, name: str, help_text: str,
              labelnames: Sequence[str], buckets: tuple[float, ...] | None) -> _Metric:
        full = check_name(name, kind)
        labels = check_label_names(labelnames, kind)
        if not isinstance(help_text, str) or not help_text.strip():
            raise ValueError(f"{full}: help must say what it measures, got {help_text!r}")
        definition = (kind, labels, buckets)
        with self._lock:
            known = self._definitions.get(full)
            if known is not None:
                if known != definition:
                    raise ValueError(f"{full} already exists as a {known[0].value} with labels "
                                     f"{known[1]}" + (f" and buckets {known[2]}" if known[2]
                                                      else "") + "; one name, one definition")
                return self._metrics[full]
            prefix = wire.series_prefix(kind, full, {})
            if cls is Histogram:
                metric: _Metric = Histogram(self, kind, full, prefix, labels,
                                            buckets or DEFAULT_BUCKETS)
            else:
                metric = cls(self, kind, full, prefix, labels)
            self._definitions[full] = definition
            self._metrics[full] = metric
            self._queue.append(_Declaration(wire.declaration_line(kind, full, buckets,
                                                                  help_text)))
            first = len(self._metrics) == 1
        if first and self._on_first_metric is not None:
            self._on_first_metric()
        return metric

    @property
    def dirty(self) -> bool:
        return bool(self._queue)

    def flush(self) -> bytes:
        """The lines owed since the last flush (b"" when nothing changed). Call sent() after
        writing them, before the next flush; the caller serialises the two."""
        if not self._queue:
            return b""
        with self._lock:
            queue, self._queue = self._queue, []
            taken = []
            for item in queue:
                line, undo = item._take()
                taken.append((item, undo, line))
            self._taken = taken
        return b"".join(line for _, _, line in taken)

    def sent(self, count: int) -> bytes:
        """`count` bytes of the last flush() were written. Lines not written go back into their
        series, ahead of anything queued since; returns the rest of a line the write cut in
        two, which must go out before anything else."""
        with self._lock:
            taken, self._taken = self._taken, []
            rest = b""
            requeue: list[_Item] = []
            pos = 0
            for item, undo, line in taken:
                end = pos + len(line)
                if end <= count:
                    pass
                elif pos < count:
                    rest = line[count - pos:]
                elif item._restore(undo):
                    requeue.append(item)
                pos = end
            if requeue:
                self._queue[:0] = requeue
        return rest

    def _reset_after_fork(self) -> None:
        """A process forked by the app starts with nothing owed: its own increments are its
        deltas, and the parent's pending ones are sent by the parent alone."""
        lock = threading.Lock()
        self._lock = lock
        self._queue = [item for item in self._queue if isinstance(item, _Declaration)]
        self._taken = []
        for metric in self._metrics.values():
            metric._reset_after_fork(lock)


def _reset_in_child(ref: weakref.ref[Registry]) -> None:
    registry = ref()
    if registry is not None:
        registry._reset_after_fork()
