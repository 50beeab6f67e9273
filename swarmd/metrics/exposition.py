"""The Prometheus text format 0.0.4: the fleet's own series and the apps' series.

The fleet's series are made from a plain FleetSample the supervisor fills in (no live objects
are read here), every one prefixed swarmd_ and labelled node="<id>" where it is about a node:
a slot id, never a pid, so a series survives its node's restarts. Written by hand rather than
with prometheus_client: the format is a page of rules, and the supervisor, which is forked for
every node, stays free of its import (and of its registry's locks and threads).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from swarmd.metrics.names import escape_help, escape_label_value, format_value
from swarmd.metrics.store import MetricStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class NodeSample(NamedTuple):
    """One slot as the fleet sees it at render time. Counts are the slot's totals since the
    supervisor started (every generation of the slot), so they never go back."""

    id: int
    up: bool  # a process runs in the slot and has reported
    health_code: int | None = None  # the last code; None before the first report
    reports: int = 0
    restarts: Mapping[str, int] = {}  # reason (hung, exited, unhealthy, ...) -> count
    recycles: Mapping[str, int] = {}  # reason (memory, lifetime, ...) -> count
    exits: Mapping[str, int] = {}  # how ("0", "1", "SIGKILL", ...) -> count
    cpu_seconds: float | None = None  # the slot's CPU time: every generation, summed
    memory_bytes: int | None = None  # the running node's memory (its cgroup, else PSS)
    generation: int = 0


class Lateness:
    """How late each WATCHDOG=1 went out, as a histogram: observe() on every ping."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENESS_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds_late: float) -> None:
        late = max(0.0, seconds_late)
        self.counts[bisect_left(LATENESS_BUCKETS, late)] += 1
        self.sum += late
        self.count += 1


class FleetSample(NamedTuple):
    version: str
    nodes: Sequence[NodeSample]
    reloads: Mapping[str, int] = {}  # result (ok, rejected, rolled_back) -> count
    watchdog: Lateness | None = None  # None when systemd asked for no watchdog


def _header(out: list[str], name: str, kind: str, text: str) -> None:
    out.append(f"# HELP {name} {escape_help(text)}\n# TYPE {name} {kind}\n")


def _per_node(out: list[str], name: str, kind: str, text: str,
              values: list[tuple[int, float | None]]) -> None:
    rows = [f'{name}{{node="{node}"}} {format_value(value)}\n'
            for node, value in values if value is not None]
    if rows:
        _header(out, name, kind, text)
        out.extend(rows)


def _per_node_by(out: list[str], name: str, text: str, label: str,
                 values: list[tuple[int, Mapping[str, int]]]) -> None:
    rows = [f'{name}{{node="{node}",{label}="{escape_label_value(str(key))}"}} '
            f"{format_value(count)}\n"
            for node, counts in values for key, count in sorted(counts.items())]
    if rows:
        _header(out, name, "counter", text)
        out.extend(rows)


def render_fleet(sample: FleetSample, out: list[str]) -> None:
    out.append("# HELP swarmd_build_info The running supervisor's version.\n"
               "# TYPE swarmd_build_info gauge\n"
               f'swarmd_build_info{{version="{escape_label_value(sample.version)}"}} 1\n')
    nodes = sorted(sample.nodes, key=lambda n: n.id)
    _per_node(out, "swarmd_node_up", "gauge",
              "1 when the slot's node runs and has reported, else 0.",
              [(n.id, 1 if n.up else 0) for n in nodes])
    _per_node(out, "swarmd_node_health_code", "gauge",
              "The node's last health code (0 healthy); absent before its first report.",
              [(n.id, n.health_code) for n in nodes])
    _per_node(out, "swarmd_node_reports_total", "counter",
              "Health reports of the slot's nodes (a healthy node's heartbeats included).",
              [(n.id, n.reports) for n in nodes])
    _per_node(out, "swarmd_node_generation", "gauge",
              "Restarts of the slot so far: the generation of its running node.",
              [(n.id, n.generation) for n in nodes])
    _per_node_by(out, "swarmd_node_restarts_total", "Nodes of the slot restarted, by reason.",
                 "reason", [(n.id, n.restarts) for n in nodes])
    _per_node_by(out, "swarmd_node_recycles_total",
                 "Nodes of the slot recycled (replaced on purpose, not failed), by reason.",
                 "reason", [(n.id, n.recycles) for n in nodes])
    _per_node_by(out, "swarmd_node_exits_total",
                 "Nodes of the slot that ended, by exit status or signal.",
                 "status", [(n.id, n.exits) for n in nodes])
    _per_node(out, "swarmd_node_cpu_seconds_total", "counter",
              "CPU time used by the slot's nodes, every generation summed.",
              [(n.id, n.cpu_seconds) for n in nodes])
    _per_node(out, "swarmd_node_memory_bytes", "gauge",
              "Memory of the slot's running node (its cgroup's memory.current, else PSS).",
              [(n.id, n.memory_bytes) for n in nodes])
    reloads = sorted(sample.reloads.items())
    if reloads:
        _header(out, "swarmd_reloads_total", "counter", "Reloads (deploys), by result.")
        out.extend(f'swarmd_reloads_total{{result="{escape_label_value(result)}"}} {count}\n'
                   for result, count in reloads)
    if sample.watchdog is not None:
        _render_lateness(sample.watchdog, out)


def _render_lateness(lateness: Lateness, out: list[str]) -> None:
    name = "swarmd_watchdog_lateness_seconds"
    _header(out, name, "histogram",
            "How late each WATCHDOG=1 was sent after it was due (a busy loop shows here).")
    running = 0
    for bound, n in zip((*LATENESS_BUCKETS, float("inf")), lateness.counts, strict=True):
        running += n
        out.append(f'{name}_bucket{{le="{format_value(bound)}"}} {running}\n')
    out.append(f"{name}_sum {format_value(lateness.sum)}\n{name}_count {lateness.count}\n")


def render_store_stats(store: MetricStore, out: list[str]) -> None:
    stats = list(store.node_stats())
    if not stats:
        return
    _per_node(out, "swarmd_metrics_series", "gauge",
              "App metric series held for the slot (histograms count buckets + 3).",
              [(node, series) for node, series, _ in stats])
    _per_node(out, "swarmd_metrics_refused_total", "counter",
              "App metric updates refused for the slot (caps, type conflicts).",
              [(node, refused) for node, _, refused in stats])


def render(sample: FleetSample | None, store: MetricStore | None) -> bytes:
    """The whole exposition: the fleet's series, then the apps'."""
    out: list[str] = []
    if sample is not None:
        render_fleet(sample, out)
    if store is not None:
        render_store_stats(store, out)
        store.render_into(out)
    return "".join(out).encode("utf-8")
