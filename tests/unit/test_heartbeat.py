"""Heartbeats in shared memory: which reports become beats, what the supervisor makes of them,
and what happens when two nodes share an entry."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from swarmd.api import Node
from swarmd.node.heartbeat import CAPACITY, SIZE, BeatTable
from swarmd.node.process import NodeProcess


@pytest.fixture
def table() -> Iterator[BeatTable]:
    made = BeatTable.create()
    assert made is not None
    yield made
    made.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        os.close(fd)


def drain(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def test_a_zero_after_a_zero_is_a_beat_everything_else_goes_through_the_pipe(
        table: BeatTable, pipe: tuple[int, int]) -> None:
    r, w = pipe
    node = Node(7, 0, w, supervisor_pid=os.getpid(), beats=table.writer(7))
    node.healthy()
    assert drain(r) == b"0\n"  # the first report: the supervisor must see it
    assert table.read(7, os.getpid()) is None
    before = time.monotonic()
    node.healthy()
    node.healthy()
    assert drain(r) == b""  # two beats, no write
    beats, at = table.read(7, os.getpid())  # type: ignore[misc]
    assert beats == 2 and before <= at <= time.monotonic()
    node.unhealthy(3)
    assert drain(r) == b"3\n"  # a problem goes at once
    node.healthy()
    assert drain(r) == b"0\n"  # and so does the way back to 0
    node.healthy()
    assert drain(r) == b""
    assert table.read(7, os.getpid())[0] == 3  # type: ignore[index]


def test_a_zero_the_pipe_had_no_room_for_is_written_not_beaten(
        table: BeatTable, pipe: tuple[int, int]) -> None:
    r, w = pipe
    node = Node(1, 0, w, supervisor_pid=os.getpid(), beats=table.writer(1))
    node.unhealthy(2)
    drain(r)
    filler = b"x" * 65536
    while True:  # fill the pipe: the next report cannot be written
        try:
            os.write(w, filler)
        except BlockingIOError:
            break
    node.healthy()  # the supervisor was last told 2: this 0 must reach it, and waits
    assert table.read(1, os.getpid()) is None
    while drain(r):
        pass
    node.healthy()
    assert drain(r) == b"0\n"
    node.healthy()
    assert drain(r) == b"" and table.read(1, os.getpid())[0] == 1  # type: ignore[index]


def test_due_metrics_go_through_the_pipe_with_the_code(
        table: BeatTable, pipe: tuple[int, int]) -> None:
    r, w = pipe
    node = Node(2, 0, w, supervisor_pid=os.getpid(), beats=table.writer(2))
    node.healthy()
    drain(r)
    jobs = node.metrics.counter("jobs", "jobs done")
    node._flusher_stop.set()  # the test sends them itself
    jobs.inc()
    node._flushed_at = 0.0  # due
    node.healthy()
    sent = drain(r)
    assert sent.endswith(b"0\n") and b"jobs" in sent


def test_a_node_whose_entry_another_took_reports_through_the_pipe(
        table: BeatTable, pipe: tuple[int, int]) -> None:
    r, w = pipe
    node = Node(5, 0, w, supervisor_pid=os.getpid(), beats=table.writer(5))
    node.healthy()
    node.healthy()
    assert drain(r) == b"0\n"
    # A node CAPACITY ids away, in another process, claims the same entry.
    other = table.writer(5 + CAPACITY)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if other.beat(time.monotonic()) else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert table.read(5, os.getpid()) is None
    assert table.read(5 + CAPACITY, pid)[0] == 1  # type: ignore[index]
    node.healthy()
    assert drain(r) == b"0\n"  # lost its entry: the pipe, for good
    node.healthy()
    assert drain(r) == b"0\n"
    assert table.read(5 + CAPACITY, pid)[0] == 1  # type: ignore[index]  # left alone


def test_the_supervisor_counts_beats_as_reports_and_never_goes_back() -> None:
    proc = NodeProcess(4, 0, 1234, -1, -1, -1, -1, 100.0, False)
    proc.take_beats((3, 150.0))  # before its first report read: nothing to fold yet
    assert proc.reports == 0 and proc.last_report_at is None
    proc.last_report_at, proc.reports = 120.0, 1
    proc.take_beats((3, 150.0))
    assert proc.reports == 4 and proc.last_report_at == 150.0
    proc.take_beats((3, 150.0))  # looked again, nothing new
    assert proc.reports == 4
    proc.last_report_at = 160.0  # a pipe report came after the last beat
    proc.take_beats((5, 155.0))
    assert proc.reports == 6 and proc.last_report_at == 160.0
    proc.take_beats(None)
    assert proc.reports == 6


def test_an_ended_nodes_entry_is_cleared_only_if_still_its_own(table: BeatTable) -> None:
    writer = table.writer(9)
    assert writer.beat(1.0)
    table.clear(9, os.getpid() + 1)  # another process: not its entry
    assert table.read(9, os.getpid()) == (1, 1.0)
    table.clear(9, os.getpid())
    assert table.read(9, os.getpid()) is None


def test_a_table_opens_from_its_fd_and_refuses_other_files(table: BeatTable,
                                                           tmp_path) -> None:  # type: ignore
    assert table.writer(3).beat(2.5)
    fd = os.dup(table.fd)
    other = BeatTable.open(fd)
    assert other is not None and other.read(3, os.getpid()) == (1, 2.5)
    assert not os.get_inheritable(fd)
    # every fd of the file here, its mapping's own copy included: a forked node closes them
    assert fd in other.fds and set(table.fds) < set(other.fds)
    other.close()
    path = tmp_path / "small"
    path.write_bytes(b"\0" * 64)
    small = os.open(path, os.O_RDWR)
    try:
        assert BeatTable.open(small) is None
    finally:
        os.close(small)
    assert os.fstat(table.fd).st_size == SIZE


def test_deadline_checks_share_grid_points_and_a_silent_node_is_judged_on_time() -> None:
    from swarmd.supervisor.fleet import LIVENESS_GRID, next_check

    limit = 10.0
    grid = limit / LIVENESS_GRID
    # Healthy nodes with deadlines anywhere in one grid step are looked at together.
    checks = {next_check(deadline, limit, now=100.0) for deadline in (108.8, 109.1, 109.9)}
    assert checks == {108.75}
    # Each check is before its deadline, never after it...
    for deadline in (100.5, 101.0, 103.3, 109.99):
        when = next_check(deadline, limit, now=100.0)
        assert 100.0 < when <= deadline and deadline - when < grid
    # ...and once no grid point is left ahead, the deadline itself: exact, not late.
    assert next_check(101.2, limit, now=101.0) == 101.2
    assert next_check(5.0, 0.0, now=1.0) == 5.0
