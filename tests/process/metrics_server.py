"""A stand-in for the supervisor's metrics side, for tests with real Prometheus tools: a Poller
loop serving MetricsEndpoint, with simulated nodes whose app metrics take the real path (the
node's Registry -> wire lines -> HealthParser -> MetricStore) and a FleetSample of their state.
Node 1 is "killed" once (its registry starts from zero, node_ended is called): its counters go
on from where they were. Prints the port, serves until SIGTERM.

    python -m tests.process.metrics_server NODES
"""

from __future__ import annotations

import signal
import socket
import sys
import time

from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timers
from swarmd.metrics.address import Address
from swarmd.metrics.endpoint import MetricsEndpoint
from swarmd.metrics.exposition import FleetSample, Lateness, NodeSample, render
from swarmd.metrics.node import Registry
from swarmd.metrics.store import MetricStore
from swarmd.node.protocol import HealthParser

TICK = 0.1


class SimulatedNode:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.parser = HealthParser()
        self.generation = 0
        self.reports = 0
        self.start()

    def start(self) -> None:
        self.registry = Registry()
        self.jobs = self.registry.counter("jobs", "Jobs done, by queue.", ["queue"])
        self.depth = self.registry.gauge("queue_depth", "Jobs waiting in the queue.")
        self.took = self.registry.histogram("job_seconds", "Seconds per job.",
                                            buckets=[0.01, 0.1, 1])

    def work(self, store: MetricStore, ticks: int) -> None:
        self.jobs.labels("a").inc(1 + self.id)
        self.jobs.labels('we"ird\\').inc()
        self.depth.set(ticks % 7)
        self.took.observe(0.005 * (ticks % 50))
        batch = self.parser.feed(self.registry.flush() + b"0\n")
        assert not batch.errors, batch.errors
        self.reports += batch.reports
        if batch.metrics is not None:
            store.apply(self.id, batch.metrics)


def main() -> None:
    count = int(sys.argv[1])
    poller, timers = Poller(), Timers()
    store = MetricStore()
    nodes = [SimulatedNode(i) for i in range(count)]
    lateness = Lateness()
    ticks = [0]

    def sample() -> FleetSample:
        return FleetSample("0.1.0-test", [
            NodeSample(n.id, True, 0, n.reports, {"hung": n.generation} if n.generation else {},
                       {}, {"SIGKILL": n.generation} if n.generation else {},
                       ticks[0] * 0.01, 20_000_000 + n.id * 1000, n.generation)
            for n in nodes], {"ok": 1}, lateness)

    def tick() -> None:
        ticks[0] += 1
        lateness.observe(0.0001 * (ticks[0] % 20))
        for node in nodes:
            node.work(store, ticks[0])
        if ticks[0] == 30 and count > 1:  # node 1 is killed and replaced: counting from zero
            store.node_ended(1)
            nodes[1].generation += 1
            nodes[1].start()
        timers.call_at(time.monotonic() + TICK, tick)

    endpoint = MetricsEndpoint(Address(socket.AF_INET, "127.0.0.1", 0),
                               lambda: render(sample(), store), poller, timers, time.monotonic)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    tick()
    print(endpoint.address.port, flush=True)
    while not stop:
        poller.poll(TICK)
        timers.run_due(time.monotonic())
    endpoint.close()


if __name__ == "__main__":
    main()
