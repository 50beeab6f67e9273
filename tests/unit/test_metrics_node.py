"""node.metrics: what an app can make, what an update costs in bytes, and that a full pipe
loses nothing (swarmd.metrics.node and swarmd.api.Node's write path)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from swarmd.api import Node
from swarmd.metrics.names import DEFAULT_BUCKETS
from swarmd.metrics.node import Registry
from swarmd.node.protocol import HealthParser
from tests.waiting import wait_for


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def node(pipe: tuple[int, int]) -> Iterator[Node]:
    made = Node(3, 0, pipe[1], supervisor_pid=os.getpid())
    made.metrics_interval = 3600.0  # these tests flush by hand; one test sets its own
    yield made
    made._flusher_stop.set()  # the flusher thread writes no more to a closed fd's number


def read_all(fd: int) -> bytes:
    chunks = []
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def fill(fd: int) -> None:
    try:
        while True:
            os.write(fd, b"0\n" * 2048)
    except BlockingIOError:
        pass
    try:  # the last bytes: pipes take less than a page once nearly full
        while True:
            os.write(fd, b"0\n")
    except BlockingIOError:
        pass


# --- making metrics -------------------------------------------------------------------------


def test_a_flush_carries_declarations_then_updates_of_what_changed() -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "Jobs done.", ["queue"])
    depth = registry.gauge("queue_depth", "Jobs waiting.")
    took = registry.histogram("job_seconds", "Time per job.", buckets=[0.1, 1])
    jobs.labels("a").inc()
    jobs.labels(queue="a").inc(2)
    depth.set(7)
    took.observe(0.05)
    took.observe(0.5)
    took.observe(3)
    data = registry.flush()
    registry.sent(len(data))
    assert data.decode().splitlines() == [
        "t counter jobs_total Jobs done.",
        "t gauge queue_depth Jobs waiting.",
        "t histogram job_seconds 0.1,1.0 Time per job.",
        'c jobs_total{queue="a"} 3',
        "g queue_depth 7.0",
        "h job_seconds 3 3.55 1 1",
    ]
    assert registry.flush() == b""  # nothing changed since
    jobs.labels("a").inc(0.5)
    assert registry.flush() == b'c jobs_total{queue="a"} 0.5\n'


def test_a_counter_is_named_with_total_once() -> None:
    registry = Registry()
    assert registry.counter("jobs_total", "x").name == "jobs_total"
    assert registry.counter("jobs", "x").name == "jobs_total"  # the same one, made once


def test_making_the_same_metric_twice_returns_it() -> None:
    registry = Registry()
    first = registry.counter("jobs", "x", ["queue"])
    assert registry.counter("jobs", "other help", ("queue",)) is first


@pytest.mark.parametrize("make, message", [
    (lambda r: r.counter("2jobs", "x"), "is not a Prometheus name"),
    (lambda r: r.counter("jobs:rate", "x"), "is not a Prometheus name"),
    (lambda r: r.counter("swarmd_jobs", "x"), "reserved for the supervisor"),
    (lambda r: r.counter("__jobs", "x"), "reserved by Prometheus"),
    (lambda r: r.counter("jobs", ""), "help must say"),
    (lambda r: r.counter("jobs", "x", ["node"]), "added by the supervisor"),
    (lambda r: r.counter("jobs", "x", ["a", "a"]), "repeat a name"),
    (lambda r: r.counter("jobs", "x", "queue"), "a list of names"),
    (lambda r: r.counter("jobs", "x", ["__a"]), "reserved by Prometheus"),
    (lambda r: r.counter("jobs", "x", ["a-b"]), "is not a Prometheus name"),
    (lambda r: r.histogram("t", "x", labelnames=["le"]), "bucket bound"),
    (lambda r: r.histogram("t_count", "x"), "suffix its own series get"),
    (lambda r: r.histogram("t", "x", buckets=[1, 1]), "strictly ascending"),
    (lambda r: r.histogram("t", "x", buckets=[]), "at least one finite"),
    (lambda r: r.histogram("t", "x", buckets=[1, float("nan")]), "finite"),
    (lambda r: r.histogram("t", "x", buckets=list(range(100))), "at most 64"),
    (lambda r: r.histogram("t", "x", buckets="abc"), "a list of numbers"),
])
def test_bad_definitions_are_refused_at_once(make, message: str) -> None:  # type: ignore
    with pytest.raises(ValueError, match=message):
        make(Registry())


def test_one_name_one_definition() -> None:
    registry = Registry()
    registry.counter("jobs", "x", ["queue"])
    with pytest.raises(ValueError, match="already exists as a counter"):
        registry.counter("jobs", "x", ["kind"])
    registry.gauge("depth", "x")
    with pytest.raises(ValueError, match="already exists as a gauge"):
        registry.histogram("depth", "x")


def test_a_trailing_inf_bucket_is_implicit() -> None:
    registry = Registry()
    registry.histogram("t", "x", buckets=[1, 2, float("inf")])
    assert registry.flush() == b"t histogram t 1.0,2.0 x\n"


def test_the_default_buckets_are_prometheus_own() -> None:
    registry = Registry()
    registry.histogram("t", "x")
    bounds = registry.flush().split(b" ")[3]
    assert tuple(float(b) for b in bounds.split(b",")) == DEFAULT_BUCKETS


@pytest.mark.parametrize("update, message", [
    (lambda r: r.counter("c", "x").inc(-1), ">= 0"),
    (lambda r: r.counter("c", "x").inc(float("inf")), "finite"),
    (lambda r: r.counter("c", "x").inc(float("nan")), "finite"),
    (lambda r: r.histogram("h", "x").observe(float("nan")), "NaN"),
    (lambda r: r.counter("c", "x", ["q"]).inc(), "update one child"),
    (lambda r: r.gauge("g", "x", ["q"]).set(1), "update one child"),
    (lambda r: r.histogram("h", "x", labelnames=["q"]).observe(1), "update one child"),
    (lambda r: r.counter("c", "x", ["q"]).labels("a", "b"), "expected 1 label values"),
    (lambda r: r.counter("c", "x", ["q"]).labels(k="a"), "expected labels"),
    (lambda r: r.counter("c", "x", ["q"]).labels("a", q="a"), "not both"),
    (lambda r: r.counter("c", "x").labels("a"), "has no labels"),
])
def test_bad_updates_are_refused(update, message: str) -> None:  # type: ignore
    with pytest.raises(ValueError, match=message):
        update(Registry())


def test_label_values_are_escaped_and_ordered_by_name() -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "x", ["queue", "kind"])
    registry.sent(len(registry.flush()))
    jobs.labels('a"b\\c\nd', 7).inc()
    assert registry.flush() == b'c jobs_total{kind="7",queue="a\\"b\\\\c\\nd"} 1\n'


def test_label_values_are_strings_however_given() -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "x", ["queue"])
    assert jobs.labels(7) is jobs.labels("7") is jobs.labels(queue=7) is jobs.labels(7)
    assert jobs.labels(["a"]) is jobs.labels("['a']")


def test_gauge_inc_dec_and_histogram_time() -> None:
    registry = Registry()
    depth = registry.gauge("depth", "x")
    took = registry.histogram("took", "x", buckets=[1000])
    registry.sent(len(registry.flush()))
    depth.inc(5)
    depth.dec(2)
    with took.time():
        pass
    lines = registry.flush().decode().splitlines()
    assert lines[0] == "g depth 3"
    assert lines[1].startswith("h took 1 ") and lines[1].endswith(" 1")


# --- what a full pipe does ------------------------------------------------------------------


def test_lines_not_written_go_back_into_their_series() -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "x")
    took = registry.histogram("took", "x", buckets=[1])
    registry.sent(len(registry.flush()))
    jobs.inc(2)
    took.observe(0.5)
    registry.flush()
    assert registry.sent(0) == b""  # nothing went out
    jobs.inc(3)
    took.observe(2)
    assert registry.flush().decode().splitlines() == ["c jobs_total 5", "h took 2 2.5 1"]


def test_a_line_cut_by_a_partial_write_is_finished_first() -> None:
    registry = Registry()
    first = registry.counter("first", "x")
    second = registry.counter("second", "x")
    registry.sent(len(registry.flush()))
    first.inc(1)
    second.inc(1)
    data = registry.flush()
    assert data == b"c first_total 1\nc second_total 1\n"
    rest = registry.sent(len(b"c first_total 1\nc sec"))
    assert rest == b"ond_total 1\n"  # the cut line's rest; its value is on its way
    assert registry.flush() == b""  # nothing else owed: the first line went whole


def test_unsent_declarations_stay_ahead_of_updates() -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "x")
    jobs.inc()
    registry.flush()
    jobs.inc()  # between the flush and its failed write
    registry.sent(0)
    assert registry.flush().decode().splitlines() == ["t counter jobs_total x",
                                                      "c jobs_total 2"]


# --- Node: one write for metrics and code ---------------------------------------------------


def test_a_report_writes_metrics_and_code_in_one_write(node: Node,
                                                       pipe: tuple[int, int]) -> None:
    jobs = node.metrics.counter("jobs", "x")
    jobs.inc()
    node.healthy()
    assert os.read(pipe[0], 4096) == b"t counter jobs_total x\nc jobs_total 1\n0\n"
    node.healthy()  # nothing changed: the report alone
    assert os.read(pipe[0], 4096) == b"0\n"


def test_an_app_without_metrics_writes_as_before(node: Node, pipe: tuple[int, int]) -> None:
    node.unhealthy(3)
    assert os.read(pipe[0], 4096) == b"3\n"
    assert node._metrics is None


def test_a_full_pipe_keeps_every_increment_and_the_worst_code(
        node: Node, pipe: tuple[int, int]) -> None:
    r, w = pipe
    jobs = node.metrics.counter("jobs", "x", ["queue"])
    node.healthy()
    read_all(r)
    fill(w)
    for _ in range(1000):
        jobs.labels("a").inc()
    node.unhealthy(3)
    jobs.labels("b").inc(5)
    node.healthy()
    node.flush_metrics()
    read_all(r)  # the supervisor reads at last
    node.healthy()
    batch = HealthParser().feed(read_all(r))
    assert batch.errors == []
    assert batch.worst == 3
    assert batch.metrics is not None
    assert batch.metrics.counters == {("jobs_total", 'queue="a"'): 1000.0,
                                      ("jobs_total", 'queue="b"'): 5.0}


def test_partial_writes_keep_the_stream_whole(node: Node, pipe: tuple[int, int]) -> None:
    """Metric lines longer than the pipe's room are cut by a partial write: the rest of the
    cut line goes out first, and every line arrives whole and once."""
    r, w = pipe
    parser = HealthParser()
    family = node.metrics.counter("jobs", "x", ["id"])
    node.healthy()
    total: dict[tuple[str, str], float] = {}

    def drain(limit: int | None = None) -> None:
        batch = parser.feed(read_all(r) if limit is None else os.read(r, limit))
        assert batch.errors == []
        if batch.metrics is not None:
            for key, delta in batch.metrics.counters.items():
                total[key] = total.get(key, 0.0) + delta

    drain()
    for round_ in range(20):
        node.healthy()
        while node._pending is None:  # fill the pipe the node's way: the stream stays whole
            node.healthy()
        drain(4096 * (1 + round_ % 3) + 1001 + round_ * 37)  # less room than the lines need
        for i in range(200):
            family.labels("x" * 50 + str(i)).inc()
        node.healthy()
        drain()
    node.flush_metrics()
    drain()
    assert len(total) == 200
    assert set(total.values()) == {20.0}


def test_a_closed_pipe_stops_the_node_and_its_flusher(pipe: tuple[int, int]) -> None:
    r, w = pipe
    node = Node(3, 0, w, supervisor_pid=os.getpid())
    node.metrics.counter("jobs", "x").inc()
    os.close(r)
    node.healthy()
    assert node.stopping.is_set() and node._flusher_stop.is_set()


def test_the_flusher_sends_metrics_without_a_report(pipe: tuple[int, int]) -> None:
    r, w = pipe
    node = Node(3, 0, w, supervisor_pid=os.getpid())
    node.metrics_interval = 0.01
    try:
        node.metrics.counter("jobs", "x").inc(4)
        data = wait_for(lambda: read_all(r), 5, "the flusher's write")
        assert data == b"t counter jobs_total x\nc jobs_total 4\n"
    finally:
        node._flusher_stop.set()


def test_a_forked_process_starts_with_nothing_owed(node: Node, pipe: tuple[int, int]) -> None:
    r, _ = pipe
    jobs = node.metrics.counter("jobs", "x")
    node.healthy()
    read_all(r)
    jobs.inc(10)  # owed by the parent
    pid = os.fork()
    if pid == 0:
        try:
            jobs.inc(1)
            node.flush_metrics()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert read_all(r) == b"c jobs_total 1\n"  # the child's own delta only
    node.flush_metrics()
    assert read_all(r) == b"c jobs_total 10\n"
