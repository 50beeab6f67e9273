"""What node.metrics costs the app: one update of each kind, a flush, a report with metrics.

    .venv/bin/python bench/metrics_node.py

Best of 5 timeit repeats (the steady state, not the noise of a shared machine); nothing is
asserted. The target is <= 1 us per counter update, with no syscall per update (none is made:
an update only touches memory; flush() makes bytes and Node.report writes them with the code).
"""

from __future__ import annotations

import os
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from swarmd.api import Node  # noqa: E402


def best(stmt, number: int) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number


def main() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    node = Node(0, 0, w, supervisor_pid=os.getpid())
    node.metrics_interval = 3600.0
    jobs = node.metrics.counter("jobs", "Jobs done.")
    by_queue = node.metrics.counter("jobs_by_queue", "Jobs done.", ["queue", "result"])
    child = by_queue.labels("q1", "ok")
    depth = node.metrics.gauge("queue_depth", "Jobs waiting.")
    took = node.metrics.histogram("job_seconds", "Seconds per job.")
    children = [by_queue.labels(f"q{i}", "ok") for i in range(20)]

    def drain() -> None:
        try:
            while os.read(r, 1 << 16):
                pass
        except BlockingIOError:
            pass

    node.healthy()
    drain()
    rows = [
        ("counter.inc()", lambda: jobs.inc(), 1_000_000),
        ("counter child .inc() (child kept by the app)", lambda: child.inc(), 1_000_000),
        ("counter .labels('q1', 'ok').inc()", lambda: by_queue.labels("q1", "ok").inc(),
         500_000),
        ("gauge.set(3)", lambda: depth.set(3), 1_000_000),
        ("gauge.inc()", lambda: depth.inc(), 1_000_000),
        ("histogram.observe(0.3) (14 buckets)", lambda: took.observe(0.3), 1_000_000),
    ]
    print(f"python {sys.version.split()[0]}")
    for label, stmt, number in rows:
        print(f"{label:<52} {best(stmt, number) * 1e9:7.0f} ns per update")
    drain()

    def report_after_20_updates() -> None:
        for c in children:
            c.inc()
        node._flushed_at = 0.0  # due: this report carries them (one every metrics_interval)
        node.healthy()
        drain()

    def report_alone() -> None:  # the usual report: metrics not due (or unchanged)
        node.healthy()
        drain()

    t20 = best(report_after_20_updates, 20_000)
    t0 = best(report_alone, 20_000)
    inc = best(lambda: child.inc(), 1_000_000)
    print(f"{'report carrying 20 changed series (write + drain)':<52} {t20 * 1e6:7.2f} us")
    print(f"{'report without metric changes (write + drain)':<52} {t0 * 1e6:7.2f} us")
    print(f"{'=> flushing 20 series costs, per flush':<52} {(t20 - t0 - 20 * inc) * 1e6:7.2f} us")
    node._flusher_stop.set()


if __name__ == "__main__":
    main()
