"""A MetricStore as plain data, for a supervisor that re-executes itself with its nodes handed
over: its counters must not go back, and nodes that declared their histograms before will not
declare them again. json.dumps takes what snapshot() returns."""

from __future__ import annotations

from typing import Any

from swarmd.metrics.names import Kind
from swarmd.metrics.store import MetricStore, _cost, _Family, _Histogram, _Series, _Slot

SNAPSHOT_VERSION = 1


def snapshot(store: MetricStore) -> dict[str, Any]:
    families = []
    for family in store._families.values():
        slots: dict[str, list[list[Any]]] = {}
        for node, held in family.slots.items():
            slots[str(node)] = [
                [labels, series.value] if isinstance(series, _Series)
                else [labels, list(series.bounds), series.counts, series.sum, series.count]
                for labels, series in held.items()]
        families.append({"name": family.name, "kind": family.kind.value,
                         "help": family.help, "slots": slots})
    nodes = {str(node): {"buckets": {name: list(bounds) for name, bounds in slot.buckets.items()},
                         "refused": slot.refused}
             for node, slot in store._slots.items()}
    return {"version": SNAPSHOT_VERSION, "families": families, "nodes": nodes}


def restore(store: MetricStore, data: Any) -> MetricStore:
    """Fill the empty `store` from `data`; ValueError when it is not a snapshot (the caller
    then starts empty: counters reset once, which Prometheus handles as a restart)."""
    try:
        if data["version"] != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {data['version']!r}")
        for node_text, info in data["nodes"].items():
            slot = store._slots[int(node_text)] = _Slot()
            slot.buckets = {str(name): tuple(float(b) for b in bounds)
                            for name, bounds in info["buckets"].items()}
            slot.refused = int(info["refused"])
        for entry in data["families"]:
            family = _Family(str(entry["name"]), Kind(entry["kind"]), str(entry["help"]))
            store._families[family.name] = family
            for node_text, rows in entry["slots"].items():
                node = int(node_text)
                slot = store._slots.setdefault(node, _Slot())
                held = family.slots[node] = {}
                for row in rows:
                    labels = str(row[0])
                    held[labels] = _series(family, node, labels, row)
                    cost = _cost(held[labels])
                    slot.series += cost
                    store._total += cost
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a metrics snapshot: {exc!r}") from None
    return store


def _series(family: _Family, node: int, labels: str, row: list[Any]) -> _Series | _Histogram:
    full = f'node="{node}",{labels}' if labels else f'node="{node}"'
    if family.kind is not Kind.HISTOGRAM:
        series = _Series(f"{family.name}{{{full}}}")
        series.value = float(row[1])
        return series
    histogram = _Histogram(family.name, full, tuple(float(b) for b in row[1]))
    if len(row[2]) != len(histogram.counts):
        raise ValueError(f"{family.name}: bucket counts do not fit")
    histogram.counts = [float(n) for n in row[2]]
    histogram.sum, histogram.count = float(row[3]), float(row[4])
    return histogram
