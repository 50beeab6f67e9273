"""Metric lines on the health pipe: parsed next to the codes, coalesced per series, every
malformed line a clear protocol error and every bound held (HealthParser + swarmd.metrics.wire)."""

from __future__ import annotations

import pytest

from swarmd.metrics.names import DEFAULT_BUCKETS, Kind
from swarmd.metrics.node import Registry
from swarmd.metrics.wire import (
    MAX_ERRORS_PER_BATCH,
    MAX_LINE,
    MAX_OBSERVATIONS_PER_BATCH,
    MAX_SERIES_PER_BATCH,
    Declaration,
)
from swarmd.node.protocol import HealthBatch, HealthParser


def feed(data: bytes) -> HealthBatch:
    return HealthParser().feed(data)


def test_metric_lines_are_not_reports_but_travel_with_them() -> None:
    batch = feed(b"c jobs_total 1\n0\ng depth 3\n")
    assert (batch.worst, batch.reports, batch.errors) == (0, 1, [])
    assert batch.metrics is not None
    assert batch.metrics.counters == {("jobs_total", ""): 1.0}
    assert batch.metrics.gauges == {("depth", ""): 3.0}
    assert batch.metrics.lines == 2


def test_metrics_alone_are_no_report() -> None:
    batch = feed(b"c jobs_total 1\n")
    assert (batch.worst, batch.reports, batch.errors) == (None, 0, [])


def test_a_batch_without_metric_lines_carries_none() -> None:
    assert feed(b"0\n").metrics is None
    assert feed(b"0\n3\n").metrics is None
    assert feed(b"0 \n").metrics is None  # a code with a blank around it is still a code


def test_updates_are_coalesced_per_series_in_order() -> None:
    batch = feed(b"c jobs 1\nc jobs_total 2\ng depth 3\ng depth 1\nc jobs{q=\"a\"} 1\n"
                 b"o took 0.5\no took 2\nh t 2 1.5 1 1\nh t 1 3 0 0\n")
    updates = batch.metrics
    assert updates is not None
    assert updates.counters == {("jobs_total", ""): 3.0, ("jobs_total", 'q="a"'): 1.0}
    assert updates.gauges == {("depth", ""): 1.0}  # the last value wins
    assert updates.observations == {("took", ""): [0.5, 2.0]}
    assert updates.histograms == {("t", ""): [3.0, 4.5, 1.0, 1.0]}


def test_declarations() -> None:
    batch = feed(b"t counter jobs Jobs done, by queue.\n"
                 b"t gauge depth\n"
                 b"t histogram took 0.1,1 Time \\\\ per\\njob.\n"
                 b"t histogram other - Default bounds.\n")
    assert batch.metrics is not None and batch.errors == []
    assert batch.metrics.declarations == {
        "jobs_total": Declaration(Kind.COUNTER, None, "Jobs done, by queue."),
        "depth": Declaration(Kind.GAUGE, None, ""),
        "took": Declaration(Kind.HISTOGRAM, (0.1, 1.0), "Time \\\\ per\\njob."),
        "other": Declaration(Kind.HISTOGRAM, DEFAULT_BUCKETS, "Default bounds."),
    }


def test_help_keeps_only_the_escapes_the_text_format_knows() -> None:
    batch = feed(b"t gauge depth a\\tb \\\\ c\\n \\\n")
    assert batch.metrics is not None
    assert batch.metrics.declarations["depth"].help == "a\\\\tb \\\\ c\\n \\\\"


def test_labels_are_one_series_whatever_their_order() -> None:
    batch = feed(b'c jobs{b="2",a="1"} 1\nc jobs{a="1",b="2"} 1\nc jobs{a="1",b="2",} 1\n')
    assert batch.metrics is not None and batch.errors == []
    assert batch.metrics.counters == {("jobs_total", 'a="1",b="2"'): 3.0}


def test_label_values_keep_their_escapes_and_spaces() -> None:
    batch = feed(b'g depth{q="a \\"b\\" \\\\ c\\n"} 1\ng depth{} 2\n')
    assert batch.metrics is not None and batch.errors == []
    assert batch.metrics.gauges == {("depth", 'q="a \\"b\\" \\\\ c\\n"'): 1.0, ("depth", ""): 2.0}


def test_what_the_node_writes_parses_back() -> None:
    registry = Registry()
    jobs = registry.counter("jobs", "Jobs\ndone \\ here.", ["queue", "kind"])
    took = registry.histogram("took", "x", buckets=[0.5, 1], labelnames=["queue"])
    depth = registry.gauge("depth", "x")
    jobs.labels('we"ird\\', "é").inc(3)
    took.labels("a").observe(0.7)
    depth.set(float("nan"))
    batch = feed(registry.flush() + b"0\n")
    assert batch.errors == [] and batch.worst == 0 and batch.metrics is not None
    assert batch.metrics.declarations["jobs_total"].help == "Jobs\\ndone \\\\ here."
    assert batch.metrics.counters == {("jobs_total", 'kind="é",queue="we\\"ird\\\\"'): 3.0}
    assert batch.metrics.histograms == {("took", 'queue="a"'): [1.0, 0.7, 0.0, 1.0]}
    value = batch.metrics.gauges[("depth", "")]
    assert value != value


@pytest.mark.parametrize("line, message", [
    (b"c jobs", "malformed metric line"),
    (b"c jobs ", "expected one number"),
    (b"c  jobs 1", "malformed metric line"),
    (b"c jobs 1 2", "expected one number"),
    (b"c jobs x", "expected numbers"),
    (b"c jobs 1_000", "expected numbers"),
    (b"c jobs -1", ">= 0"),
    (b"c jobs nan", ">= 0"),
    (b"c jobs inf", "finite"),
    (b"c 2jobs 1", "malformed metric line"),
    (b"c swarmd_jobs 1", "reserved for the supervisor"),
    (b"c __jobs 1", "reserved by Prometheus"),
    (b'c jobs{node="3"} 1', "added by the supervisor"),
    (b'c jobs{__x="3"} 1', "reserved by Prometheus"),
    (b'c jobs{a="1",a="2"} 1', "given twice"),
    (b'c jobs{a="\\t"} 1', "may only escape"),
    (b'c jobs{a="\xff"} 1', "not UTF-8"),
    (b'c jobs{a=1} 1', "malformed metric line"),
    (b'c jobs{a="1"', "malformed metric line"),
    (b'o took{le="1"} 1', "bucket bound"),
    (b"o took nan", "cannot observe NaN"),
    (b"h took 1 1", "expected COUNT SUM"),
    (b"h took 1 1 2", "more than COUNT"),
    (b"h took 1.5 1 1", "whole numbers"),
    (b"h took 1 nan 1", "SUM is NaN"),
    (b"h took -1 1 0", "whole numbers"),
    (b"t counter", "malformed declaration"),
    (b"t summary x", "malformed declaration"),
    (b"t histogram took", "needs its bucket bounds"),
    (b"t histogram took 2,1 x", "strictly ascending"),
    (b"t histogram took a,b x", "a list of numbers"),
    (b"t histogram took_sum - x", "suffix its own series get"),
    (b"t gauge 9x x", "not a Prometheus name"),
    (b"g " + b"x" * 300 + b" 1", "longer than 200"),
])
def test_malformed_metric_lines_are_errors(line: bytes, message: str) -> None:
    batch = feed(line + b"\n0\n")
    assert batch.worst == 0  # the code next to it still counts
    assert len(batch.errors) == 1 and message in batch.errors[0], batch.errors


def test_a_line_that_is_neither_is_a_code_error() -> None:
    batch = feed(b"jobs_total 1\n")
    assert batch.errors == ["expected a code from 0 to 255 per line, got b'jobs_total 1'"]


def test_histogram_counts_of_two_lengths_in_one_read_are_an_error() -> None:
    batch = feed(b"h took 1 1 1\nh took 1 1 1 0\n")
    assert batch.errors == ["histogram took: bucket counts of different lengths in one read"]


def test_the_same_bad_line_repeated_is_one_error_with_a_count() -> None:
    batch = feed(b"c jobs -1\n" * 1000)
    assert batch.errors == ["counter jobs_total: an increase must be a finite number >= 0, "
                            "got -1.0 (1000 times)"]


def test_many_different_bad_lines_are_bounded_errors() -> None:
    batch = feed(b"".join(b"c jobs%d -1\n" % i for i in range(1000)))
    assert len(batch.errors) == MAX_ERRORS_PER_BATCH + 1
    assert batch.errors[-1] == f"and {1000 - MAX_ERRORS_PER_BATCH} more malformed metric " \
                               f"lines in this read"


def test_a_metric_line_may_be_long_but_not_endless() -> None:
    parser = HealthParser()
    long_value = b"v" * (MAX_LINE - 40)
    line = b'g depth{q="' + long_value + b'"} 1'
    assert parser.feed(line[:100]).errors == []  # a metric line's start is kept, not garbage
    batch = parser.feed(line[100:] + b"\n")
    assert batch.errors == [] and batch.metrics is not None
    assert len(batch.metrics.gauges) == 1
    endless = parser.feed(b"g depth " + b"1" * (MAX_LINE + 10))
    assert endless.errors and "longer than 4096 bytes without newline" in endless.errors[0]
    assert parser.feed(b"1\n0\n").worst == 0  # recovers after the next newline
    too_long = feed(b"g depth{q=\"" + b"v" * MAX_LINE + b"\"} 1\n")
    assert too_long.errors and "metric line longer than 4096 bytes" in too_long.errors[0]


def test_a_metric_line_at_eof_without_newline_still_counts() -> None:
    parser = HealthParser()
    parser.feed(b"0\nc jobs 2")
    batch = parser.close()
    assert batch.metrics is not None and batch.metrics.counters == {("jobs_total", ""): 2.0}


def test_series_per_batch_are_bounded() -> None:
    data = b"".join(b'c jobs{id="%d"} 1\n' % i for i in range(MAX_SERIES_PER_BATCH + 100))
    batch = feed(data + b"c jobs{id=\"0\"} 1\n")
    assert batch.metrics is not None
    assert batch.metrics.size == MAX_SERIES_PER_BATCH
    assert batch.metrics.dropped == 100
    assert batch.metrics.counters[("jobs_total", 'id="0"')] == 2.0  # a known series still adds
    assert batch.errors == [f"100 metric updates dropped: one read may carry at most "
                            f"{MAX_SERIES_PER_BATCH} series and {MAX_OBSERVATIONS_PER_BATCH} "
                            f"observations; send less or flush more often"]


def test_observations_per_batch_are_bounded() -> None:
    batch = feed(b"o took 1\n" * (MAX_OBSERVATIONS_PER_BATCH + 5))
    assert batch.metrics is not None
    assert len(batch.metrics.observations[("took", "")]) == MAX_OBSERVATIONS_PER_BATCH
    assert batch.metrics.dropped == 5


def test_garbage_of_every_byte_never_raises() -> None:
    import random

    rng = random.Random(13)
    parser = HealthParser()
    for _ in range(300):
        size = rng.randrange(1, 400)
        data = bytes(rng.choice(b"cghot {}=\",.\\0123456789abxz_\n\xff\x00 e-+")
                     for _ in range(size))
        batch = parser.feed(data)
        assert isinstance(batch.errors, list)
    parser.close()


def test_merge_folds_a_later_read() -> None:
    first = feed(b"c jobs 1\ng depth 1\nh t 1 1 1\no took 1\n3\n")
    first.merge(feed(b"c jobs 2\ng depth 5\nh t 1 1 0\no took 2\n0\nt gauge depth d\n"))
    assert (first.worst, first.reports) == (3, 2)
    updates = first.metrics
    assert updates is not None
    assert updates.counters == {("jobs_total", ""): 3.0}
    assert updates.gauges == {("depth", ""): 5.0}
    assert updates.histograms == {("t", ""): [2.0, 2.0, 1.0]}
    assert updates.observations == {("took", ""): [1.0, 2.0]}
    assert "depth" in updates.declarations and updates.lines == 9
    alone = feed(b"0\n")
    alone.merge(feed(b"c jobs 1\n"))
    assert alone.metrics is not None and alone.metrics.counters == {("jobs_total", ""): 1.0}


@pytest.mark.parametrize("good, bad, message", [
    (b"c jobs 1", b"c jobs -1", ">= 0"),
    (b"c jobs 1", b"c jobs nan", ">= 0"),
    (b"c jobs 1", b"c jobs 1_0", "expected numbers"),
    (b"c jobs 1", b"c jobs x", "expected numbers"),
    (b"c jobs 1", b"c jobs 1 2", "expected one number"),
    (b"c jobs 1", b"c jobs ", "expected one number"),
    (b"g depth 1", b"g depth x", "expected numbers"),
    (b"g depth 1", b"g depth 1 2", "expected one number"),
])
def test_a_series_seen_before_is_checked_as_strictly(good: bytes, bad: bytes,
                                                     message: str) -> None:
    """Lines of a known series skip the regex (bench/metrics_render.py): not the checks."""
    parser = HealthParser()
    assert parser.feed(good + b"\n").errors == []
    batch = parser.feed(bad + b"\n" + good + b"\n")
    assert len(batch.errors) == 1 and message in batch.errors[0], batch.errors
    assert batch.metrics is not None and batch.metrics.size == 1


def test_known_series_take_the_short_way_with_the_same_result() -> None:
    parser = HealthParser()
    flush = b'c jobs{q="a"} 1\ng depth{q="a"} 3\nc jobs{q="b"} 2\ng depth{q="a"} nan\n'
    first = parser.feed(flush)
    second = parser.feed(flush)
    assert first.errors == second.errors == []
    assert first.metrics is not None and second.metrics is not None
    assert first.metrics.counters == second.metrics.counters == {
        ("jobs_total", 'q="a"'): 1.0, ("jobs_total", 'q="b"'): 2.0}
    assert list(second.metrics.gauges) == [("depth", 'q="a"')]
    assert second.metrics.size == 3 and second.metrics.lines == 4


def test_a_shell_writes_metric_lines_with_echo() -> None:
    """What a command node does: plain echo to $SWARMD_HEALTH_FD, one line per write."""
    import os
    import subprocess

    r, w = os.pipe()
    script = ('echo "t counter jobs Jobs done, by queue." >&$SWARMD_HEALTH_FD\n'
              'for q in a b a; do echo "c jobs{queue=\\"$q\\"} 1" >&$SWARMD_HEALTH_FD; done\n'
              'echo "g queue_depth 3" >&$SWARMD_HEALTH_FD\n'
              'echo "o job_seconds 0.25" >&$SWARMD_HEALTH_FD\n'
              'echo 0 >&$SWARMD_HEALTH_FD\n')
    try:
        subprocess.run(["sh", "-c", script], check=True, timeout=30,  # fd 3, as swarmd does:
                       preexec_fn=lambda: os.dup2(w, 3), close_fds=False,  # dash: 1 digit
                       env={"SWARMD_HEALTH_FD": "3", "PATH": os.environ["PATH"]})
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
    batch = feed(data)
    assert (batch.worst, batch.errors) == (0, [])
    assert batch.metrics is not None
    assert batch.metrics.counters == {("jobs_total", 'queue="a"'): 2.0,
                                      ("jobs_total", 'queue="b"'): 1.0}
    assert batch.metrics.gauges == {("queue_depth", ""): 3.0}
    assert batch.metrics.observations == {("job_seconds", ""): [0.25]}
