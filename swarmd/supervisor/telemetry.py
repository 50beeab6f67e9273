"""What the supervisor counts for Prometheus, and where it serves it: the counts of every slot
across its generations (reports, restarts, recycles, exits, CPU), deploys by result, the
watchdog's lateness, the apps' own metrics (swarmd.metrics.store), the endpoint and the
textfile.

Counting is always on (a few integer additions per event); the metrics modules are imported
and the store kept only when `metrics.listen` or `metrics.textfile` asks for them, so a fleet
without metrics pays nothing at start. The counts cross a deploy's re-exec (to_state), so no
counter ever goes back while the service runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swarmd.config.metrics import MetricsConfig
from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timers

if TYPE_CHECKING:
    from swarmd.metrics.endpoint import MetricsEndpoint
    from swarmd.metrics.exposition import FleetSample, Lateness
    from swarmd.metrics.store import MetricStore
    from swarmd.metrics.textfile import TextfileWriter
    from swarmd.metrics.wire import MetricUpdates

Emit = Callable[..., None]


class SlotCounts:
    """One slot's totals since the service started: every generation of it."""

    __slots__ = ("reports", "restarts", "recycles", "exits", "cpu_seconds")

    def __init__(self) -> None:
        self.reports = 0  # of the generations that ended (the live one counts its own)
        self.restarts: dict[str, int] = {}
        self.recycles: dict[str, int] = {}
        self.exits: dict[str, int] = {}
        self.cpu_seconds = 0.0  # of the generations that ended

    def to_data(self) -> list[Any]:
        return [self.reports, self.restarts, self.recycles, self.exits, self.cpu_seconds]

    @classmethod
    def from_data(cls, data: list[Any]) -> SlotCounts:
        counts = cls()
        counts.reports = int(data[0])
        counts.restarts, counts.recycles, counts.exits = (dict(d) for d in data[1:4])
        counts.cpu_seconds = float(data[4])
        return counts


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


class Telemetry:
    """The counts, and (when the config asks) the store, the endpoint and the textfile."""

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.slots: dict[int, SlotCounts] = {}
        self.reloads: dict[str, int] = {}
        self.lateness: Lateness | None = None
        self.store: MetricStore | None = None
        self.endpoint: MetricsEndpoint | None = None
        self.textfile: TextfileWriter | None = None
        if config.enabled:
            from swarmd.metrics.exposition import Lateness
            from swarmd.metrics.store import MetricStore

            self.lateness = Lateness()
            self.store = MetricStore(config.caps)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def counts(self, slot_id: int) -> SlotCounts:
        counts = self.slots.get(slot_id)
        if counts is None:
            counts = self.slots[slot_id] = SlotCounts()
        return counts

    # ---- what the fleet and the supervisor tell ------------------------------------------

    def app_metrics(self, slot_id: int, updates: MetricUpdates, emit: Emit) -> None:
        """A health batch's app metrics; what the store refused is told once per process."""
        if self.store is None:
            return
        for event in self.store.apply(slot_id, updates):
            emit("node.metrics_refused", event.message,
                 fields={"SWARMD_METRICS_PROBLEM": event.kind.value,
                         "SWARMD_METRICS_FAMILY": event.family})

    def ended(self, slot_id: int, reports: int, how: str, cpu_seconds: float | None) -> None:
        """A node of the slot was reaped: its reports, its exit (`0`, `1`, `SIGKILL`) and its
        CPU time join the slot's totals; its gauges go."""
        counts = self.counts(slot_id)
        counts.reports += reports
        _bump(counts.exits, how)
        if cpu_seconds is not None:
            counts.cpu_seconds += cpu_seconds
        if self.store is not None:
            self.store.node_ended(slot_id)

    def restarted(self, slot_id: int, reason: str) -> None:
        _bump(self.counts(slot_id).restarts, reason)

    def recycled(self, slot_id: int, reason: str) -> None:
        _bump(self.counts(slot_id).recycles, reason)

    def slot_removed(self, slot_id: int) -> None:
        """The slot is gone (a deploy with fewer nodes): its series go with it."""
        self.slots.pop(slot_id, None)
        if self.store is not None:
            self.store.drop_node(slot_id)

    def deployed(self, result: str) -> None:
        _bump(self.reloads, result)

    def watchdog(self, seconds_late: float) -> None:
        if self.lateness is not None:
            self.lateness.observe(seconds_late)

    # ---- serving --------------------------------------------------------------------------

    def open(self, sample: Callable[[], FleetSample], *, poller: Poller, timers: Timers,
             clock: Callable[[], float], emit: Emit, sock: Any = None) -> None:
        """Start the endpoint (on `sock` when one was handed over) and the textfile writer;
        a problem is told once (swarmd.metrics) and the fleet runs on without them."""
        if self.store is None:
            return
        from swarmd.metrics.exposition import render

        store = self.store

        def exposition() -> bytes:
            return render(sample(), store)

        def problem(message: str) -> None:
            emit("swarmd.metrics", message, priority=4)

        if self.config.listen is not None:
            from swarmd.metrics.endpoint import EndpointError, MetricsEndpoint

            try:
                self.endpoint = MetricsEndpoint(self.config.listen, exposition, poller, timers,
                                                clock, sock=sock, on_error=problem)
            except EndpointError as exc:
                problem(f"metrics.listen: {exc}; the fleet runs on without its endpoint")
        if self.config.textfile is not None:
            from swarmd.metrics.textfile import TextfileWriter

            self.textfile = TextfileWriter(self.config.textfile, exposition, poller, timers,
                                           clock, on_error=problem)
            self.textfile.start()

    def where(self) -> dict[str, str | None] | None:
        """For `status --json`: the endpoint's bound address (a port 0 made real) and the
        textfile; None without metrics."""
        if self.store is None:
            return None
        return {"listen": str(self.endpoint.address) if self.endpoint is not None else None,
                "textfile": self.textfile.path if self.textfile is not None else None}

    def fds(self) -> list[int]:
        """Fds a new node must not hold."""
        fds: list[int] = []
        if self.endpoint is not None:
            fds.extend(self.endpoint.fds())
        if self.textfile is not None:
            fds.extend(self.textfile.fds())
        return fds

    def close(self) -> None:
        """At the end: the endpoint stops listening, the textfile is removed (a stale file
        would show a stopped fleet as up)."""
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self.textfile is not None:
            self.textfile.close()
            self.textfile = None

    # ---- across a re-exec -----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        from swarmd.metrics.snapshot import snapshot

        state: dict[str, Any] = {
            "slots": {str(slot_id): c.to_data() for slot_id, c in self.slots.items()},
            "reloads": self.reloads,
            "store": snapshot(self.store) if self.store is not None else None,
            "listen_fd": self.endpoint.hand_over() if self.endpoint is not None else None,
            "listen": self.config.listen,
        }
        if self.lateness is not None:
            state["lateness"] = [self.lateness.counts, self.lateness.sum, self.lateness.count]
        return state

    def restore(self, state: dict[str, Any] | None) -> Any:
        """The counts of the supervisor before the exec; returns the listening socket it
        handed over when this config listens at the same address (else closes it), or None."""
        if not state:
            return None
        self.slots = {int(k): SlotCounts.from_data(v) for k, v in state["slots"].items()}
        self.reloads = dict(state["reloads"])
        if self.store is not None and state.get("store") is not None:
            from swarmd.metrics.snapshot import restore
            from swarmd.metrics.store import MetricStore

            try:
                self.store = restore(MetricStore(self.config.caps), state["store"])
            except ValueError:  # an older shape: app counters start again, once (Prometheus
                self.store = MetricStore(self.config.caps)  # reads it as a target restart)
        if self.lateness is not None and state.get("lateness"):
            counts, total, count = state["lateness"]
            if len(counts) == len(self.lateness.counts):
                self.lateness.counts, self.lateness.sum, self.lateness.count = \
                    list(counts), float(total), int(count)
        fd = state.get("listen_fd")
        if fd is None:
            return None
        import os
        import socket

        if state.get("listen") != self.config.listen or self.config.listen is None:
            os.close(fd)  # the new config listens elsewhere, or not at all
            return None
        return socket.socket(fileno=fd)
