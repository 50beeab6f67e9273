"""NodeProcess's health reads on a real pipe (no fork): the at-rest fast path never changes
what a read means."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from swarmd.node.process import HEALTHY_ONE, NodeProcess


@pytest.fixture
def proc_and_writer() -> Iterator[tuple[NodeProcess, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    proc = NodeProcess(0, 0, os.getpid(), -1, r, -1, -1, 0.0, is_command=False)
    proc.output_fds.clear()
    yield proc, w
    proc.close_health()
    try:
        os.fstat(w)
    except OSError:
        return  # the test closed it
    os.close(w)


def test_one_healthy_report_is_the_shared_batch(proc_and_writer: tuple[NodeProcess, int]
                                                ) -> None:
    proc, w = proc_and_writer
    os.write(w, b"0\n")
    assert proc.read_health() is HEALTHY_ONE
    assert (HEALTHY_ONE.worst, HEALTHY_ONE.reports, HEALTHY_ONE.errors) == (0, 1, [])


def test_a_zero_completing_a_partial_line_is_not_taken_for_healthy(
        proc_and_writer: tuple[NodeProcess, int]) -> None:
    proc, w = proc_and_writer
    os.write(w, b"3")
    batch = proc.read_health()
    assert batch is not None and batch.worst is None
    os.write(w, b"0\n")  # completes "30"
    batch = proc.read_health()
    assert batch is not HEALTHY_ONE and batch is not None
    assert (batch.worst, batch.reports) == (30, 1)


def test_a_zero_ending_an_over_long_line_is_not_a_report(
        proc_and_writer: tuple[NodeProcess, int]) -> None:
    proc, w = proc_and_writer
    os.write(w, b"9" * 100)
    first = proc.read_health()
    assert first is not None and first.errors
    os.write(w, b"0\n")  # the end of the dropped line
    batch = proc.read_health()
    assert batch is not HEALTHY_ONE and batch is not None
    assert (batch.worst, batch.reports, batch.errors) == (None, 0, [])


def test_other_reads_still_fold_every_report(proc_and_writer: tuple[NodeProcess, int]) -> None:
    proc, w = proc_and_writer
    os.write(w, b"0\n0\n")
    batch = proc.read_health()
    assert batch is not HEALTHY_ONE and batch is not None
    assert (batch.worst, batch.reports) == (0, 2)
    os.write(w, b"3\n")
    batch = proc.read_health()
    assert batch is not None and (batch.worst, batch.reports) == (3, 1)


def test_nothing_to_read_is_an_empty_batch_and_eof_is_none(
        proc_and_writer: tuple[NodeProcess, int]) -> None:
    proc, w = proc_and_writer
    batch = proc.read_health()
    assert batch is not None and (batch.worst, batch.reports) == (None, 0)
    os.write(w, b"0\n")
    proc.read_health()
    os.close(w)
    assert proc.read_health() is None


def test_tracked_timers_that_ran_are_forgotten(proc_and_writer: tuple[NodeProcess, int]
                                               ) -> None:
    """A node that lives for months must not pile up the timers that already fired."""
    from swarmd.loop.timers import Timers

    proc, _ = proc_and_writer
    timers = Timers()
    for when in range(1000):
        proc.track(timers.call_at(float(when), lambda: None))
        timers.run_due(float(when))
    pending = proc.track(timers.call_at(5000.0, lambda: None))
    assert proc.timers == [pending]
