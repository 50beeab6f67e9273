"""Per-node figures (swarmd.node.figures): CPU percent and memory from a fake cgroup tree and a
fake /proc, the bounded round-robin of ticks, the PSS ration; and the /proc readers on real
processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarmd.node.cgroups import CgroupTree, MemorySource
from swarmd.node.figures import Figures, Sampler, cpu_usec_of, descendants, pss_of
from tests.waiting import wait_for

CLK_TCK = os.sysconf("SC_CLK_TCK")


class FakeProc:
    """/proc/PID/{stat,smaps_rollup,task/TID/children} for made-up processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def process(self, pid: int, *, ticks: int = 0, pss_kb: int = 0,
                children: tuple[int, ...] = (), threads: tuple[int, ...] = ()) -> None:
        base = self.root / str(pid)
        for tid in (pid, *threads):
            (base / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
            (base / "task" / str(tid) / "children").write_text("")
        (base / "task" / str(pid) / "children").write_text(" ".join(map(str, children)))
        utime, stime = ticks // 2, ticks - ticks // 2
        (base / "stat").write_text(f"{pid} (python (x)) S 1 {pid} {pid} 0 -1 4194560 10 0 0 0 "
                                   f"{utime} {stime} 0 0 20 0 1 0 100 1000 200")
        (base / "smaps_rollup").write_text(
            f"00400000-7ffc639b2000 ---p 00000000 00:00 0  [rollup]\nRss:  9999 kB\n"
            f"Pss:  {pss_kb} kB\nPss_Dirty: 1 kB\n")

    def thread_child(self, pid: int, tid: int, children: tuple[int, ...]) -> None:
        (self.root / str(pid) / "task" / str(tid) / "children").write_text(
            " ".join(map(str, children)) + " ")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    (tmp_path / "proc").mkdir()
    return FakeProc(tmp_path / "proc")


def node_group(tmp_path: Path, node_id: int, *, usec: int = 0, memory: int | None = None,
               procs: str = "") -> Path:
    group = tmp_path / "unit" / f"node-{node_id}"
    group.mkdir(parents=True, exist_ok=True)
    (group / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 0\nsystem_usec 0\n")
    (group / "cgroup.procs").write_text(procs)
    if memory is not None:
        (group / "memory.current").write_text(f"{memory}\n")
    return group


# ---- /proc readers -------------------------------------------------------------------------


def test_descendants_walk_every_thread(proc: FakeProc) -> None:
    proc.process(100, children=(101,), threads=(105,))
    proc.process(101, children=(102,))
    proc.process(102)
    proc.process(103)  # forked by thread 105, not by the main thread
    proc.thread_child(100, 105, (103,))
    assert sorted(descendants(100, str(proc.root))) == [100, 101, 102, 103]
    assert descendants(999, str(proc.root)) == []  # gone


def test_cpu_and_pss_sums(proc: FakeProc) -> None:
    proc.process(100, ticks=150, pss_kb=1000)
    proc.process(101, ticks=50, pss_kb=24)
    root = str(proc.root)
    assert cpu_usec_of([100, 101, 999], root) == 200 * 1e6 / CLK_TCK  # a gone pid is skipped
    assert pss_of([100, 101, 999], root) == 1024 * 1024
    assert cpu_usec_of([999], root) is None
    assert pss_of([], root) is None


def test_readers_on_real_processes() -> None:
    script = ("import subprocess, sys, time\n"
              "h = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(h.pid, flush=True)\n"
              "sum(range(3_000_000))\n"
              "time.sleep(60)\n")  # ok-sleep: a node and its helper, to be read and killed
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    helper = 0
    try:
        assert node.stdout is not None
        helper = int(node.stdout.readline())
        found = wait_for(lambda: sorted(descendants(node.pid)) == sorted([node.pid, helper]),
                         10, "the node and its helper")
        assert found
        assert (pss_of([node.pid, helper]) or 0) > 1 << 20  # two Pythons: megabytes
        assert (cpu_usec_of([node.pid]) or 0) > 0
    finally:
        node.kill()
        node.wait()
        if helper:
            os.kill(helper, 9)  # not our child (the node's): init reaps it


# ---- sampling with a cgroup tree -----------------------------------------------------------


def test_cpu_percent_from_cpu_stat_and_memory_current(tmp_path: Path) -> None:
    group = node_group(tmp_path, 1, usec=1_000_000, memory=50 << 20)
    tree = CgroupTree(str(tmp_path / "unit"), frozenset({"memory"}))
    sampler = Sampler(tree)
    sampler.track(1, pid=4242)
    assert sampler.figures(1) == Figures()
    tick = sampler.tick(100.0)
    assert tick.memory == [1]  # a new memory figure: check limits.memory
    first = sampler.figures(1)
    assert first.cpu is None  # one reading: no window yet
    assert (first.memory, first.memory_source, first.memory_at) == (
        50 << 20, MemorySource.MEMORY_CURRENT, 100.0)
    (group / "cpu.stat").write_text("usage_usec 3500000\n")  # 2.5 s of CPU in 10 s
    sampler.tick(110.0)
    assert sampler.figures(1).cpu == pytest.approx(25.0)
    assert sampler.figures(1).cpu_at == 110.0


def test_memory_is_pss_of_cgroup_procs_without_the_memory_controller(
        tmp_path: Path, proc: FakeProc) -> None:
    node_group(tmp_path, 1, usec=0, procs="100\n101\n")
    proc.process(100, pss_kb=2000)
    proc.process(101, pss_kb=48)  # a helper, in the node's cgroup
    tree = CgroupTree(str(tmp_path / "unit"))  # this host: no controllers
    sampler = Sampler(tree, proc=str(proc.root))
    assert sampler.memory_source is MemorySource.PSS
    sampler.track(1, pid=100)
    sampler.tick(1.0)
    assert sampler.figures(1).memory == 2048 * 1024
    assert sampler.figures(1).memory_source is MemorySource.PSS


def test_without_cgroups_the_descendants_count(proc: FakeProc) -> None:
    proc.process(100, ticks=100, pss_kb=1000, children=(101,))
    proc.process(101, ticks=0, pss_kb=500)
    sampler = Sampler(None, proc=str(proc.root))
    sampler.track(7, pid=100)
    sampler.tick(10.0)
    proc.process(100, ticks=100 + 2 * CLK_TCK, pss_kb=1000, children=(101,))  # 2 s of CPU
    proc.process(101, ticks=CLK_TCK, pss_kb=500)  # 1 s
    sampler.tick(20.0)
    figures = sampler.figures(7)
    assert figures.cpu == pytest.approx(30.0)  # 3 s in 10 s
    assert figures.memory == 1500 * 1024


def test_cpu_never_goes_negative_when_a_helper_exits(proc: FakeProc) -> None:
    proc.process(100, ticks=100, children=(101,))
    proc.process(101, ticks=500)
    sampler = Sampler(None, proc=str(proc.root))
    sampler.track(1, pid=100)
    sampler.tick(0.0)
    proc.process(100, ticks=110)  # the helper and its 500 ticks are gone
    sampler.tick(10.0)
    assert sampler.figures(1).cpu == 0.0


def test_a_new_generation_starts_a_new_window(tmp_path: Path) -> None:
    group = node_group(tmp_path, 1, usec=0)
    sampler = Sampler(CgroupTree(str(tmp_path / "unit")))
    sampler.track(1, pid=10)
    sampler.tick(0.0)
    (group / "cpu.stat").write_text("usage_usec 9000000\n")
    sampler.track(1, pid=11)  # restarted: the old node's CPU is not the new one's
    sampler.tick(10.0)
    assert sampler.figures(1).cpu is None


def test_forget(tmp_path: Path) -> None:
    node_group(tmp_path, 1)
    sampler = Sampler(CgroupTree(str(tmp_path / "unit")))
    sampler.track(1, pid=10)
    sampler.forget(1)
    sampler.forget(1)
    assert sampler.tick(0.0).memory == []
    assert sampler.figures(1) == Figures()


# ---- bounded ticks -------------------------------------------------------------------------


def many_nodes(tmp_path: Path, count: int) -> Sampler:
    for node_id in range(count):
        node_group(tmp_path, node_id, memory=1 << 20)
    sampler = Sampler(CgroupTree(str(tmp_path / "unit"), frozenset({"memory"})),
                      cpu_period=10.0, per_tick=8, memory_burst=1.0)
    for node_id in range(count):
        sampler.track(node_id, pid=1000 + node_id)
    return sampler


def test_a_tick_visits_at_most_per_tick_nodes_round_robin(tmp_path: Path) -> None:
    sampler = many_nodes(tmp_path, 20)
    seen: list[int] = []
    for n in range(5):
        seen.extend(sampler.tick(float(n)).memory)
    assert seen[:8] == list(range(8))  # 8 per tick, in order, then on around the ring
    assert sorted(seen[:20]) == list(range(20))


def test_interval_spreads_a_round_over_cpu_period(tmp_path: Path) -> None:
    assert many_nodes(tmp_path / "a", 256).interval() == pytest.approx(10.0 * 8 / 256)
    assert many_nodes(tmp_path / "b", 4).interval() == 10.0  # all four in one tick
    assert many_nodes(tmp_path / "c", 0).interval() == 10.0
    assert many_nodes(tmp_path / "d", 4096).interval() == 0.1  # never more often than this


def test_memory_waits_for_memory_period(tmp_path: Path) -> None:
    node_group(tmp_path, 1, memory=1 << 20)
    sampler = Sampler(CgroupTree(str(tmp_path / "unit"), frozenset({"memory"})),
                      memory_period=30.0)
    sampler.track(1, pid=10)
    assert sampler.tick(0.0).memory == [1]
    assert sampler.tick(10.0).memory == []
    assert sampler.tick(30.0).memory == [1]


def test_pss_reads_are_rationed_to_memory_share(proc: FakeProc) -> None:
    """Each memory read costs 5 ms on the fake clock; 0.1 % of a core buys one per 5 s."""
    clock = [0.0]

    def costly() -> float:
        clock[0] += 0.005  # read before and after a memory sample: 5 ms each
        return clock[0]

    for pid in range(100, 110):
        proc.process(pid, pss_kb=100)
    sampler = Sampler(None, proc=str(proc.root), per_tick=10, memory_period=0.0,
                      memory_share=0.001, memory_burst=0.004, clock=costly)
    for pid in range(100, 110):
        sampler.track(pid, pid=pid)
    order = [sampler.tick(float(second)).memory for second in range(0, 101)]
    assert len(order[0]) == 1  # a full bucket (4 ms) pays for one 5 ms read, then it is empty
    reads = [node for tick in order for node in tick]
    assert 19 <= len(reads) <= 22  # 100 s x 1 ms/s of reads = 20 reads of 5 ms
    assert sorted(reads[:10]) == list(range(100, 110))  # each in turn, none twice before all
    assert sampler.memory_interval() == pytest.approx(10 * 0.005 / 0.001)


def test_all_the_sampling_stays_within_its_share_of_a_core(tmp_path: Path) -> None:
    """A tick whose reads cost 2 ms on the fake clock is followed by the next one no sooner than
    2 ms / share: a fleet of any size costs its supervisor at most that share."""
    clock = [0.0]

    def costly() -> float:
        clock[0] += 0.001
        return clock[0]

    sampler = many_nodes(tmp_path, 256)
    sampler._clock = costly
    sampler.share = 0.0002
    spent_before = clock[0]
    next_in = sampler.tick(0.0).next_in
    spent = clock[0] - spent_before - 0.001  # from the reading that starts its own measure
    assert next_in == pytest.approx(spent / 0.0002)
    assert next_in > sampler.interval()  # the share, not the visiting pace, set it
    sampler.share = 1.0  # a share no tick reaches: the visiting pace again
    assert sampler.tick(100.0).next_in == pytest.approx(sampler.interval())


def test_without_cgroups_a_new_node_has_a_cpu_figure_at_its_first_visit(
        proc: FakeProc) -> None:
    # Its processes' CPU time was 0 at its fork: one reading gives the percent since then.
    proc.process(100, ticks=CLK_TCK, children=())  # 1 s of CPU
    sampler = Sampler(None, proc=str(proc.root))
    sampler.track(7, pid=100, started_at=6.0)
    sampler.tick(10.0)
    assert sampler.figures(7).cpu == pytest.approx(25.0)  # 1 s in 4 s
    # With a cgroup, whose count includes the slot's earlier nodes, the first visit is only
    # the baseline.
    sampler = Sampler(CgroupTree(str(proc.root / "unit")), proc=str(proc.root))
    sampler.track(7, pid=100, started_at=6.0)
    assert sampler.tree is not None
    sampler.tick(10.0)
    assert sampler.figures(7).cpu is None
