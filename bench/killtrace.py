"""Where kill -> replacement time goes, step by step, from the kernel's own scheduler events.

    .venv/bin/python bench/killtrace.py [--nodes N] [--kills K] [--rounds R] [--swarmd DIR]

As root (ftrace); tracefs is mounted at /sys/kernel/tracing if it is not there yet.

Runs the bench's kill scenario (the same apps, config and spacing as `run.py --only kill`) for
the floor and for swarmd, alternating, with ftrace recording scheduler and signal events. Each
kill is cut into the steps below, timed on CLOCK_MONOTONIC, the clock the node stamps its first
report with:

    teardown     SIGKILL sent -> the supervisor is woken (the kernel ends every thread of the
                 node, unmaps its memory, closes its files, then the pipes and pidfd fire)
    to fork      supervisor woken -> fork(2) done (reap, restart decision, pipes, the fork)
    queued       fork done -> the new node first on a CPU
    child        first on a CPU -> first report written (CPython's after-fork work, the
                 node's set-up, the app's first line)

Prints a table of medians (and p90), the floor beside swarmd.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench_run  # noqa: E402 - the bench's own harness, next to this file

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("sched/sched_process_exit", "sched/sched_process_fork", "sched/sched_switch",
          "sched/sched_wakeup", "sched/sched_wakeup_new", "signal/signal_generate")
LINE = re.compile(r"^\s*.+?-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")
STEPS = ("teardown", "to fork", "queued", "child", "total")


def tracefs(name: str, value: str) -> None:
    (TRACEFS / name).write_text(value)


class TraceEvent:
    __slots__ = ("t", "task", "name", "fields")

    def __init__(self, t: float, task: int, name: str, fields: dict[str, str]) -> None:
        self.t, self.task, self.name, self.fields = t, task, name, fields

    def pid(self, key: str = "pid") -> int:
        return int(self.fields.get(key, -1))


def parse(text: str) -> list[TraceEvent]:
    events = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            events.append(TraceEvent(float(match[3]) * 1e3, int(match[1]), match[4],
                                dict(FIELD.findall(match[5]))))
    return events


def steps(events: list[TraceEvent], supervisor: int, old: int, new: int, up_ms: float
          ) -> dict[str, float]:
    """One kill's steps in ms (KeyError/StopIteration when the trace lost an event)."""
    kill = next(e for e in events if e.name == "signal_generate" and e.fields.get("sig") == "9"
                and e.pid() == old)
    woken = next(e for e in events if e.t >= kill.t and e.name == "sched_wakeup"
                 and e.pid() == supervisor)
    fork = next(e for e in events if e.name == "sched_process_fork" and e.pid("child_pid") == new)
    first = min(e.t for e in events if e.t >= fork.t and (
        e.task == new or (e.name == "sched_switch" and e.pid("next_pid") == new)))
    return {"teardown": woken.t - kill.t, "to fork": fork.t - woken.t,
            "queued": max(0.0, first - fork.t), "child": up_ms - max(first, fork.t),
            "total": up_ms - kill.t}


def trace_instance(bench: bench_run.Bench, kind: str, nodes: int, kills: int
                   ) -> list[dict[str, float]]:
    cfg = {"timeouts": {"boot": "3s", "report": "1500ms"}}
    inst = bench.instance(kind, nodes, period=0.5, config=cfg)
    samples: list[tuple[int, int, float]] = []
    tracefs("trace", "")
    try:
        inst.wait_ready()
        if kind == "swarmd":  # as run.py: every original node past its boot deadline
            time.sleep(max(0.0, inst.timeout("boot") + 0.3
                           - (time.monotonic_ns() - inst.launched) / 1e9))
        for k in range(kills):
            slot = (k * 5) % nodes
            with inst.inbox.cond:
                old = inst.inbox.ups[slot].pid
            tracefs("tracing_on", "1")
            _, up = bench.kill_one(inst, slot)
            time.sleep(0.01)
            tracefs("tracing_on", "0")
            samples.append((old, up.pid, up.t / 1e6))
            time.sleep(0.05)
        inst.stop()
    finally:
        tracefs("tracing_on", "0")
        inst.close()
    events = parse((TRACEFS / "trace").read_text())
    rows: list[dict[str, float]] = []
    for old, new, up_ms in samples:
        try:
            rows.append(steps(events, inst.pid, old, new, up_ms))
        except (StopIteration, ValueError):
            print(f"  {kind}: a kill's events are incomplete in the trace; left out")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--swarmd", type=Path, default=bench_run.REPO,
                        help="directory holding the swarmd package to trace (default: this "
                             "repository), e.g. an older checkout for a before/after")
    args = parser.parse_args()
    if not TRACEFS.joinpath("trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=False)
    if not os.access(TRACEFS / "trace", os.W_OK):
        print(f"no writable tracefs at {TRACEFS}: run as root, on a kernel with ftrace")
        return 2
    tracefs("tracing_on", "0")
    tracefs("trace_clock", "mono")  # the clock of the nodes' own stamps
    tracefs("buffer_size_kb", "16384")
    for event in EVENTS:
        tracefs(f"events/{event}/enable", "1")
    root = Path(tempfile.mkdtemp(prefix="swarmd-killtrace-"))
    bench = bench_run.Bench(bench_run.Plan.make(True), args.swarmd.resolve(), root)
    rows: dict[str, list[dict[str, float]]] = {"floor": [], "swarmd": []}
    try:
        for _ in range(args.rounds):
            for kind in rows:
                rows[kind] += trace_instance(bench, kind, args.nodes, args.kills)
    finally:
        for event in EVENTS:
            tracefs(f"events/{event}/enable", "0")
    if not all(rows.values()):
        print("no complete kill in the trace: nothing to show")
        return 1
    print(f"\nkill -> replacement, N={args.nodes}, {args.rounds} x {args.kills} kills each; "
          f"ms, median (p90)\n")
    print("| step | floor | swarmd | difference |\n|---|---|---|---|")
    for step in STEPS:
        cells = [(statistics.median(values), bench_run.p90(values)) for values in
                 ([row[step] for row in rows[kind]] for kind in rows)]
        print(f"| {step} | {cells[0][0]:.2f} ({cells[0][1]:.2f}) | {cells[1][0]:.2f} "
              f"({cells[1][1]:.2f}) | {cells[1][0] - cells[0][0]:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
