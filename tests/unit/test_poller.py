"""The loop's fd -> callback dispatch over epoll (real pipes, no fork)."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest

from swarmd.loop.poller import Poller


@pytest.fixture
def poller() -> Iterator[Poller]:
    p = Poller()
    yield p
    p.close()


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made = [os.pipe() for _ in range(3)]
    yield made
    for r, w in made:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass


def test_only_ready_fds_run_their_callback(poller: Poller,
                                           pipes: list[tuple[int, int]]) -> None:
    calls: list[int] = []
    for i, (r, _) in enumerate(pipes):
        poller.register(r, lambda i=i: calls.append(i))
    os.write(pipes[1][1], b"x")
    assert poller.poll(0) == 1
    assert calls == [1]


def test_nothing_ready_returns_after_the_timeout(poller: Poller,
                                                 pipes: list[tuple[int, int]]) -> None:
    poller.register(pipes[0][0], lambda: pytest.fail("not ready"))
    assert poller.poll(0.01) == 0


def test_an_fd_unregistered_by_an_earlier_callback_of_the_batch_is_skipped(
        poller: Poller, pipes: list[tuple[int, int]]) -> None:
    (r0, w0), (r1, w1), _ = pipes
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        poller.unregister(r1)
        poller.unregister(r0)

    poller.register(r0, first)
    poller.register(r1, first)  # whichever runs first removes the other
    os.write(w0, b"x")
    os.write(w1, b"x")
    assert poller.poll(0) == 2
    assert calls == ["first"]


def test_a_reused_fd_number_never_gets_the_closed_files_event(
        poller: Poller, pipes: list[tuple[int, int]]) -> None:
    """A callback closes another ready fd and a new pipe gets its number in the same batch:
    the new file's callback is not run for the old file's event, only from the next poll on."""
    (r0, w0), (r1, w1), _ = pipes
    calls: list[str] = []
    new: list[int] = []

    def drain_and_replace_the_other(own: int, other: int) -> None:
        os.read(own, 10)
        calls.append("old")
        if not new:
            poller.unregister(other)
            os.close(other)
            new.extend(os.pipe())
            assert new[0] == other  # the lowest free number: the one just closed
            poller.register(new[0], lambda: calls.append("new") or os.read(new[0], 10))

    poller.register(r0, lambda: drain_and_replace_the_other(r0, r1))
    poller.register(r1, lambda: drain_and_replace_the_other(r1, r0))
    os.write(w0, b"x")
    os.write(w1, b"x")
    poller.poll(0)
    assert calls == ["old"]
    os.write(new[1], b"x")
    poller.poll(0)
    assert calls == ["old", "new"]
    survivor = r1 if new[0] == r0 else r0
    for fd in (*new, w0, w1, survivor):
        os.close(fd)
    pipes.clear()


def test_between_runs_between_two_callbacks_only(poller: Poller,
                                                 pipes: list[tuple[int, int]]) -> None:
    order: list[str] = []
    for i, (r, w) in enumerate(pipes):
        poller.register(r, lambda i=i: order.append(f"cb{i}"))
        os.write(w, b"x")
    poller.poll(0, between=lambda: order.append("between"))
    assert [o for o in order if o != "between"] == sorted(o for o in order if o != "between")
    assert order[0] != "between" and order[-1] != "between"
    assert order.count("between") == 2


def test_unregistering_an_unknown_or_closed_fd_is_harmless(
        poller: Poller, pipes: list[tuple[int, int]]) -> None:
    r, w = pipes[0]
    poller.register(r, lambda: None)
    os.close(w)
    pipes[0] = (r, r)
    poller.unregister(12345)
    assert r in poller and len(poller) == 1
    poller.unregister(r)
    assert r not in poller and len(poller) == 0


def test_eof_counts_as_ready_so_the_reader_sees_it(poller: Poller,
                                                   pipes: list[tuple[int, int]]) -> None:
    r, w = pipes[0]
    seen: list[bytes] = []
    poller.register(r, lambda: seen.append(os.read(r, 10)))
    os.close(w)
    pipes[0] = (r, r)
    poller.poll(0)
    assert seen == [b""]


def test_a_paused_fd_stays_registered_and_reports_nothing_until_resumed(
        poller: Poller, pipes: list[tuple[int, int]]) -> None:
    r, w = pipes[0]
    calls: list[bytes] = []
    poller.register(r, lambda: calls.append(os.read(r, 10)))
    poller.pause(r)
    os.write(w, b"x")
    assert poller.poll(0) == 0 and calls == []
    assert r in poller.fds()  # a child forked now still closes it
    poller.resume(r)
    assert poller.poll(0) == 1 and calls == [b"x"]


def test_a_writer_is_called_while_its_fd_takes_bytes_and_not_once_full(
        poller: Poller, pipes: list[tuple[int, int]]) -> None:
    r, w = pipes[0]
    os.set_blocking(w, False)
    calls: list[str] = []
    poller.register(w, lambda: calls.append("writable"), events=select.EPOLLOUT)
    assert poller.poll(0) == 1 and calls == ["writable"]
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    assert poller.poll(0) == 0 and calls == ["writable"]  # full: nothing to report
    os.read(r, 1 << 20)
    assert poller.poll(0) == 1 and calls == ["writable", "writable"]


def test_modify_switches_what_wakes_an_fd(poller: Poller) -> None:
    a, b = socket.socketpair()
    try:
        calls: list[str] = []
        poller.register(a, lambda: calls.append("a"))  # EPOLLIN: nothing to read yet
        assert poller.poll(0) == 0
        poller.modify(a, select.EPOLLIN | select.EPOLLOUT)  # something queued to write
        assert poller.poll(0) == 1 and calls == ["a"]
        poller.modify(a, select.EPOLLIN)  # drained: back to reading only
        assert poller.poll(0) == 0
        b.send(b"x")
        assert poller.poll(0) == 1 and calls == ["a", "a"]
        poller.modify(12345, select.EPOLLOUT)  # an unknown fd: ignored, as unregister does
    finally:
        a.close()
        b.close()


def test_resume_restores_the_events_the_fd_was_registered_for(
        poller: Poller, pipes: list[tuple[int, int]]) -> None:
    _, w = pipes[0]
    calls: list[str] = []
    poller.register(w, lambda: calls.append("w"), events=select.EPOLLOUT)
    poller.pause(w)
    assert poller.poll(0) == 0
    poller.resume(w)
    assert poller.poll(0) == 1 and calls == ["w"]
    poller.unregister(w)
    poller.register(w, lambda: calls.append("again"))  # reading a pipe's write end: never
    assert poller.poll(0) == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batched_fds_are_served_together_once_per_interval(pipes) -> None:
    clock = FakeClock()
    poller = Poller(batch_interval=0.1, clock=clock)
    seen: list[int] = []
    try:
        for i, (r, _) in enumerate(pipes[:2]):
            poller.register(r, lambda i=i, r=r: (seen.append(i), os.read(r, 100)), batched=True)
        os.write(pipes[0][1], b"0\n")
        poller.poll(0)
        assert seen == [0] and poller.batches == 1  # the first round is served at once
        os.write(pipes[0][1], b"0\n")
        os.write(pipes[1][1], b"0\n")
        poller.poll(0)
        assert seen == [0] and poller.batches == 1  # resting: nothing served
        clock.now += 0.05
        poller.poll(0)
        assert seen == [0]
        clock.now += 0.05  # the group opens: both ready fds in one round
        poller.poll(0)
        poller.poll(0)
        assert sorted(seen[1:]) == [0, 1] and poller.batches == 2
    finally:
        poller.close()


def test_a_fast_fd_wakes_at_once_while_the_group_rests(pipes) -> None:
    clock = FakeClock()
    poller = Poller(batch_interval=10.0, clock=clock)
    fast: list[bytes] = []
    try:
        r0, w0 = pipes[0]
        poller.register(r0, lambda: os.read(r0, 100), batched=True)
        os.write(w0, b"0\n")
        poller.poll(0)
        os.write(w0, b"0\n")
        poller.poll(0)  # the group now rests for 10 s (fake)
        r1, w1 = pipes[1]
        poller.register(r1, lambda: fast.append(os.read(r1, 100)))
        os.write(w1, b"death")
        assert poller.poll(1.0) == 1 and fast == [b"death"]
    finally:
        poller.close()


def test_a_resting_group_shortens_the_wait_to_its_opening(pipes) -> None:
    poller = Poller(batch_interval=0.05)
    served: list[bytes] = []
    try:
        r, w = pipes[0]
        poller.register(r, lambda: served.append(os.read(r, 100)), batched=True)
        os.write(w, b"a")
        poller.poll(0)
        os.write(w, b"b")
        poller.poll(0)  # resting
        import time

        started = time.monotonic()
        while len(served) < 2 and time.monotonic() - started < 5:
            poller.poll(None)  # no timer: the group's opening bounds the wait
        assert served == [b"a", b"b"]
    finally:
        poller.close()


def test_batch_moves_pause_and_unregister(pipes) -> None:
    poller = Poller(batch_interval=0.0)
    served: list[bytes] = []
    try:
        r, w = pipes[0]
        poller.register(r, lambda: served.append(os.read(r, 100)))
        poller.batch(r)
        assert r in poller and len(poller.fds()) == 2  # the fd and the group's epoll
        poller.pause(r)
        os.write(w, b"x")
        poller.poll(0)
        assert served == []
        poller.resume(r)
        poller.poll(0)
        poller.poll(0)
        assert served == [b"x"]
        poller.unregister(r)
        os.write(w, b"y")
        poller.poll(0)
        assert served == [b"x"] and r not in poller
    finally:
        poller.close()
