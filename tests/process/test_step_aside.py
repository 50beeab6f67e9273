"""A replacement gets the CPU right after its fork (sched_yield in the supervisor); the nodes of
the first start, forked in a row, do not. Real forks of this test process; only the
supervisor's side is checked: how much sooner a replacement runs is the bench's to show
(bench/README.md, kill -> replacement), never a timed assert."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from swarmd.config import Config
from swarmd.node.process import NodeProcess
from swarmd.supervisor.core import Supervisor
from swarmd.supervisor.fleet import Fleet
from swarmd.systemd.events import StderrSink


def quick_app(node: object) -> int:
    return 0


@pytest.fixture
def yields(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every sched_yield the supervisor (this process, not a child) makes."""
    calls: list[int] = []
    me, real = os.getpid(), os.sched_yield

    def counting() -> None:
        if os.getpid() == me:
            calls.append(1)
        real()

    monkeypatch.setattr(os, "sched_yield", counting)
    return calls


@pytest.fixture
def sup() -> Iterator[Fleet]:
    supervisor = Supervisor(Config(nodes=3), sink=StderrSink(open(os.devnull, "w")))  # noqa: SIM115
    fleet = supervisor.fleet
    fleet.versions[0] = fleet.versions[0]._replace(
        recipe=fleet.versions[0].recipe._replace(app=quick_app))
    yield fleet
    for slot in fleet.slots.values():
        if slot.proc is not None:
            _reap(slot.proc)
    supervisor.poller.close()


def _reap(proc: NodeProcess) -> None:
    """Wait for the node's exit on its pidfd (readable once it ended), then reap it."""
    assert proc.pidfd is not None
    ready, _, _ = select.select([proc.pidfd], [], [], 10)
    assert ready, "the node did not exit within 10 s"
    assert proc.reap() is not None
    for fd in list(proc.output_fds):
        proc.close_output(fd)
    proc.close_health()
    proc.close_pidfd()


def test_the_first_start_forks_in_a_row(sup: Fleet, yields: list[int]) -> None:
    sup.start_all([])  # the config's three slots, forked here
    assert yields == []
    assert sorted(sup.slots) == [0, 1, 2]
    assert all(slot.proc is not None and slot.proc.generation == 0
               for slot in sup.slots.values())


def test_a_replacement_is_given_the_cpu_after_its_fork(sup: Fleet, yields: list[int]
                                                       ) -> None:
    sup.start_all([])
    slot = sup.slots[0]
    first = slot.proc
    assert first is not None
    _reap(first)
    sup.start(slot)  # what a restart, a reload step or a timer-delayed restart calls
    assert yields == [1]
    assert slot.proc is not None and slot.proc.pid != first.pid
