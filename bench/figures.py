"""What sampling per-node figures (swarmd.node.figures.Sampler) costs the supervisor.

Forks N idle nodes from a process as heavy as swarmd's supervisor (its modules imported), each
with a second thread asleep like swarmd's parent check, then calls Sampler.tick() on the delay it
asks for during a window, as the supervisor's loop would, and prints the CPU this process used
(as % of one core), the cost of each tick and how fresh the figures were.

    .venv/bin/python bench/figures.py [--nodes 256] [--seconds 60] [--cgroups]
        [--cpu-period 20] [--per-tick 8] [--memory-share 0.0005]

--cgroups puts each node in its own cgroup (swarmd.node.cgroups.discover(): only inside a
systemd unit with Delegate=yes); without it the nodes are found through /proc (the fallback).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swarmd.supervisor.core  # noqa: E402,F401 - a supervisor's weight, copied into each node
from swarmd.node import cgroups, figures  # noqa: E402


def idle_node(ready_w: int) -> None:
    """A node at rest: its main thread waits, a second thread sleeps in poll()."""
    waiter = select.poll()
    threading.Thread(target=waiter.poll, args=(-1,), daemon=True).start()
    os.write(ready_w, b"x")
    signal.pause()
    os._exit(0)


def fork_nodes(count: int, tree: cgroups.CgroupTree | None) -> list[int]:
    pids = []
    ready_r, ready_w = os.pipe()
    for node_id in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            idle_node(ready_w)
        if tree is not None and not (tree.create(node_id) and tree.attach(node_id, pid)):
            raise SystemExit(tree.problem)
        pids.append(pid)
    os.close(ready_w)
    for _ in range(count):
        os.read(ready_r, 1)
    os.close(ready_r)
    return pids


def cpu_ns() -> int:
    """This process's CPU time from the scheduler's own accounting (ns)."""
    return int(Path("/proc/self/schedstat").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cgroups", action="store_true")
    parser.add_argument("--cpu-period", type=float, default=figures.CPU_PERIOD)
    parser.add_argument("--per-tick", type=int, default=figures.PER_TICK)
    parser.add_argument("--memory-share", type=float, default=figures.MEMORY_SHARE)
    args = parser.parse_args()
    tree = None
    if args.cgroups:
        setup = cgroups.discover()
        print(setup.message)
        tree = setup.tree
        if tree is None:
            raise SystemExit(1)
    pids = fork_nodes(args.nodes, tree)
    sampler = figures.Sampler(tree, cpu_period=args.cpu_period, per_tick=args.per_tick,
                      memory_share=args.memory_share)
    for node_id, pid in enumerate(pids):
        sampler.track(node_id, pid)
    print(f"{args.nodes} idle nodes forked; memory source {sampler.memory_source.value}; "
          f"sampling for {args.seconds:g} s, a tick every {sampler.interval():.3f} s")
    ticks: list[float] = []
    tick_cpu = 0
    memory_reads = 0
    time.sleep(1.0)  # ok-sleep: let the forks settle before the window
    start, start_cpu = time.monotonic(), cpu_ns()
    deadline = start + args.seconds
    now = start
    while now < deadline:
        t, c = time.perf_counter(), time.thread_time_ns()
        result = sampler.tick(now)
        tick_cpu += time.thread_time_ns() - c
        ticks.append((time.perf_counter() - t) * 1e3)
        memory_reads += len(result.memory)
        # ok-sleep: the loop's timer
        time.sleep(max(0.0, min(result.next_in, deadline - time.monotonic())))
        now = time.monotonic()
    wall, used = now - start, (cpu_ns() - start_cpu) / 1e9
    cpu_ages = [now - f.cpu_at for f in map(sampler.figures, range(args.nodes)) if f.cpu_at]
    memory_ages = [now - f.memory_at for f in map(sampler.figures, range(args.nodes))
                   if f.memory_at]
    ordered = sorted(ticks)
    print(f"CPU of the sampling process: {used * 1e3:.1f} ms in {wall:.1f} s = "
          f"{used / wall * 100:.3f} % of one core (target <= 0.2 %)")
    print(f"of which inside tick(): {tick_cpu / 1e6:.1f} ms = {tick_cpu / 1e9 / wall * 100:.3f} % "
          f"(the rest: waking up and sleeping between ticks)")
    print(f"ticks: {len(ticks)}, ms per tick median {statistics.median(ordered):.3f}, "
          f"p90 {ordered[int(0.9 * (len(ordered) - 1))]:.3f}, max {ordered[-1]:.3f}")
    print(f"memory reads: {memory_reads} ({memory_reads / wall:.1f}/s); nodes with a figure: "
          f"cpu {len(cpu_ages)}, memory {len(memory_ages)}; age of the oldest: cpu "
          f"{max(cpu_ages, default=0):.1f} s, memory {max(memory_ages, default=0):.1f} s")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        os.waitpid(pid, 0)
    if tree is not None:
        for node_id in range(args.nodes):
            tree.remove(node_id)


if __name__ == "__main__":
    main()
