"""Scrape cost: rendering 256 nodes x 20 app series (plus the fleet's own series), the
supervisor's cost to take in one node's flush, and whole scrapes through the real endpoint.

    .venv/bin/python bench/metrics_render.py [--nodes 256] [--series 20] [--rounds 50]

Prints medians (and p90) of wall and CPU time; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import time
from functools import partial

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from swarmd.loop.poller import Poller  # noqa: E402
from swarmd.loop.timers import Timers  # noqa: E402
from swarmd.metrics.address import Address  # noqa: E402
from swarmd.metrics.endpoint import MetricsEndpoint  # noqa: E402
from swarmd.metrics.exposition import FleetSample, Lateness, NodeSample, render  # noqa: E402
from swarmd.metrics.node import Registry  # noqa: E402
from swarmd.metrics.store import Caps, MetricStore  # noqa: E402
from swarmd.node.protocol import HealthParser  # noqa: E402


def app_registry(series: int, histograms: int) -> tuple[Registry, list]:  # type: ignore[type-arg]
    """What a node's app makes: `series` counter/gauge series and `histograms` histograms."""
    registry = Registry()
    jobs = registry.counter("jobs", "Jobs done.", ["queue", "result"])
    depth = registry.gauge("queue_depth", "Jobs waiting.", ["queue"])
    took = registry.histogram("job_seconds", "Seconds per job.", labelnames=["queue"])
    updates = []
    for i in range(series):
        if i % 3 == 2:
            updates.append(partial(depth.labels(f"q{i}").set, i))
        else:
            updates.append(jobs.labels(f"q{i}", "ok").inc)
    for i in range(histograms):
        updates.append(partial(took.labels(f"q{i}").observe, 0.001 * i))
    return registry, updates


def build(nodes: int, series: int, histograms: int) -> tuple[MetricStore, FleetSample, bytes]:
    store = MetricStore(Caps(series_per_node=10_000, series=1_000_000))
    flush = b""
    for node in range(nodes):
        registry, updates = app_registry(series, histograms)
        for update in updates:
            update()
        parser = HealthParser()
        batch = parser.feed(registry.flush() + b"0\n")
        assert not batch.errors and batch.metrics is not None, batch.errors
        store.apply(node, batch.metrics)
        for update in updates:
            update()
        flush = registry.flush() + b"0\n"  # a node's steady-state flush: every series changed
    lateness = Lateness()
    for i in range(1000):
        lateness.observe(i * 1e-5)
    sample = FleetSample("0.1.0", [
        NodeSample(i, True, 0, 1000 + i, {"hung": 1, "exited": 2}, {"memory": 1},
                   {"SIGKILL": 1, "0": 2}, 12.5 * i, 50_000_000 + i, 3) for i in range(nodes)],
        {"ok": 3, "rolled_back": 1}, lateness)
    return store, sample, flush


def timed(fn, rounds: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    walls, cpus = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return walls, cpus


def show(label: str, walls: list[float], cpus: list[float], unit: float = 1e3,
         name: str = "ms") -> None:
    p90 = sorted(walls)[int(len(walls) * 0.9)]
    print(f"{label:<58} wall median {statistics.median(walls) * unit:8.3f} {name} "
          f"(p90 {p90 * unit:.3f}), cpu median {statistics.median(cpus) * unit:8.3f} {name}")


def scrape_through_endpoint(store: MetricStore, sample: FleetSample, rounds: int) -> None:
    """The supervisor side in a child process (its own loop), scraped from here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        poller, timers = Poller(), Timers()
        endpoint = MetricsEndpoint(Address(socket.AF_INET, "127.0.0.1", 0),
                                   lambda: render(sample, store), poller, timers,
                                   time.monotonic, render_reuse=0.0)
        os.write(w, str(endpoint.address.port).encode())
        os.close(w)
        while True:
            poller.poll(0.1)
            timers.run_due(time.monotonic())
    os.close(w)
    port = int(os.read(r, 100))
    os.close(r)

    def cpu_of_child() -> float:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def scrape() -> int:
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            size = 0
            while chunk := client.recv(1 << 20):
                size += len(chunk)
            return size

    try:
        size = scrape()
        walls = []
        cpu0 = cpu_of_child()
        for _ in range(rounds):
            w0 = time.perf_counter()
            scrape()
            walls.append(time.perf_counter() - w0)
        cpu = (cpu_of_child() - cpu0) / rounds
        p90 = sorted(walls)[int(len(walls) * 0.9)]
        print(f"{'scrape via the endpoint (answer time; server CPU/scrape)':<58} wall median "
              f"{statistics.median(walls) * 1e3:8.3f} ms (p90 {p90 * 1e3:.3f}), server cpu "
              f"{cpu * 1e3:8.3f} ms (clock ticks: +-{1e3 / os.sysconf('SC_CLK_TCK') / rounds:.2f}"
              f"), {size} bytes")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def one_shape(args: argparse.Namespace, histograms: int) -> None:
    series = args.series - histograms
    store, sample, flush = build(args.nodes, series, histograms)
    body = render(sample, store)
    what = (f"{args.nodes} nodes x {series} series" +
            (f" + {histograms} histograms" if histograms else ""))
    lines = body.count(b"\n")
    print(f"-- {what}: {store.total_series} app samples, {lines} lines, {len(body)} bytes")
    show("render fleet + app series", *timed(lambda: render(sample, store), args.rounds))
    show("render the fleet's series only", *timed(lambda: render(sample, None), args.rounds))
    show("render the app series only", *timed(lambda: render(None, store), args.rounds))
    parser = HealthParser()
    parser.feed(flush)  # names and label texts are cached from the second flush on

    def take_in() -> None:
        batch = parser.feed(flush)
        store.apply(1, batch.metrics)  # type: ignore[arg-type]

    walls, cpus = timed(take_in, args.rounds * 20)
    flush_lines = flush.count(b"\n")
    show(f"take in one node's flush ({flush_lines} lines: parse + apply)", walls, cpus, 1e6,
         "us")
    if histograms == 0:
        scrape_through_endpoint(store, sample, args.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=256)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    for histograms in (0, 2):
        one_shape(args, histograms)
    print(f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB")


if __name__ == "__main__":
    main()
