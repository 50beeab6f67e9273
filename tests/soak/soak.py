"""Soak: 16 nodes for a given time under random faults, checking recovery after each one.

    .venv/bin/python -m tests.soak.soak --seconds 600

Each step injects one fault (kill -9, SIGSTOP, crash, a restart code, a log code, a rolling
reload), then waits until the fleet has recovered: exactly N live, healthy nodes, each slot
with one process, no zombie; and checks that the supervisor's open fds and memory stay where
they were after warm-up. Prints the counts at the end; exits 1 on the first broken invariant.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.process.harness import Swarm, base_config, children, pid_alive, zombies

FAULTS = ("kill", "freeze", "crash", "restart_code", "log_code", "reload")
RECOVERY_TIMEOUT = 60.0
FD_SLACK = 4  # a node being started holds a few fds for a moment
RSS_SLACK_KB = 4096


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def _config(nodes: int) -> dict:
    return base_config(
        nodes=nodes, app="swarmd_testapps:soak",
        timeouts={"boot": "5s", "report": "2s", "shutdown": "2s", "drain": "2s"},
        restart={"delay": "50ms", "max_delay": "500ms", "reset_after": "5s", "give_up_after": 0},
        health={"codes": {2: {"name": "backlog", "priority": "notice", "action": "log"},
                          3: {"name": "memory_limit", "priority": "err", "action": "restart"}}})


class Soak:
    def __init__(self, swarm: Swarm, nodes: int, rng: random.Random) -> None:
        self.swarm = swarm
        self.nodes = nodes
        self.rng = rng
        self.injected: collections.Counter[str] = collections.Counter()
        self.recoveries = 0
        self.recovery_times: list[float] = []
        self.worst: dict[str, float] = {}
        self.baseline: tuple[int, int] | None = None
        self.max_fds = 0
        self.max_rss = 0

    def recovered(self) -> bool:
        try:
            status = self.swarm.status()
        except Exception:
            return False
        rows = status["nodes"]
        if status["mode"] != "running" or len(rows) != self.nodes:
            return False
        if not all(r["pid"] and r["health"] == "healthy" and r["state"] == "running"
                   for r in rows):
            return False
        pids = {r["pid"] for r in rows}
        live = {pid for pid in children(self.swarm.pid) if pid_alive(pid)}
        return pids == live and not zombies(self.swarm.pid)

    def wait_recovered(self, since: float, fault: tuple[str, int, int] | None = None) -> float:
        deadline = since + RECOVERY_TIMEOUT
        while fault is not None and not self.observed(*fault):
            if time.monotonic() > deadline:
                raise SystemExit(f"soak: fault {fault[0]} on pid {fault[1]} never noticed\n"
                                 f"{self.swarm.output()[-4000:]}")
            time.sleep(0.02)  # ok-sleep: polling interval
        while not self.recovered():
            if time.monotonic() > deadline:
                raise SystemExit(f"soak: no recovery within {RECOVERY_TIMEOUT}s; status:\n"
                                 f"{self.swarm.status()}\n{self.swarm.output()[-4000:]}")
            time.sleep(0.05)  # ok-sleep: polling interval
        return time.monotonic() - since

    def observed(self, fault: str, pid: int, marks: int) -> bool:
        """The supervisor has noticed the fault: the target was replaced, or logged."""
        if fault == "log_code":
            return self.swarm.output().count("-> backlog (2)") > marks
        if fault == "reload":
            return True  # `swarmd reload` returned: it is done
        try:
            return pid not in {r["pid"] for r in self.swarm.status()["nodes"]}
        except Exception:
            return False

    def inject(self) -> tuple[str, int, int]:
        fault = self.rng.choice(FAULTS)
        marks = self.swarm.output().count("-> backlog (2)")
        rows = self.swarm.status()["nodes"]
        pid = self.rng.choice(rows)["pid"]
        if fault == "kill":
            os.kill(pid, signal.SIGKILL)
        elif fault == "freeze":
            os.kill(pid, signal.SIGSTOP)
        elif fault == "crash":
            os.kill(pid, signal.SIGUSR1)
        elif fault == "restart_code":
            os.kill(pid, signal.SIGUSR2)
        elif fault == "log_code":
            os.kill(pid, signal.SIGWINCH)
        else:
            result = subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                                     str(self.swarm.runtime)], capture_output=True, text=True,
                                    timeout=RECOVERY_TIMEOUT)
            if result.returncode != 0:
                raise SystemExit(f"soak: reload failed: {result.stderr}")
        self.injected[fault] += 1
        return fault, pid, marks

    def check_resources(self) -> None:
        fds, rss = _fd_count(self.swarm.pid), _rss_kb(self.swarm.pid)
        self.max_fds, self.max_rss = max(self.max_fds, fds), max(self.max_rss, rss)
        if self.baseline is None:
            self.baseline = (fds, rss)
            return
        if fds > self.baseline[0] + FD_SLACK:
            raise SystemExit(f"soak: fd leak: {fds} open, {self.baseline[0]} after warm-up")
        if rss > self.baseline[1] + RSS_SLACK_KB:
            raise SystemExit(f"soak: memory grew: {rss} kB RSS, {self.baseline[1]} kB after "
                             f"warm-up")

    def run(self, seconds: float) -> None:
        self.swarm.wait_ready(timeout=60)
        self.wait_recovered(time.monotonic())
        end = time.monotonic() + seconds
        warmup = 5
        while time.monotonic() < end:
            started = time.monotonic()
            fault = self.inject()
            took = self.wait_recovered(started, fault)
            self.recoveries += 1
            self.recovery_times.append(took)
            self.worst[fault[0]] = max(self.worst.get(fault[0], 0.0), took)
            if self.recoveries >= warmup:
                self.check_resources()

    def report(self) -> str:
        times = sorted(self.recovery_times) or [0.0]
        base = self.baseline or (0, 0)
        return (f"soak: {sum(self.injected.values())} faults injected "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.injected.items()))}); "
                f"{self.recoveries} recoveries; recovery median {times[len(times) // 2]:.2f}s, "
                f"max {times[-1]:.2f}s (worst per fault: "
                f"{', '.join(f'{k} {v:.2f}s' for k, v in sorted(self.worst.items()))}); "
                f"supervisor fds {base[0]} -> max {self.max_fds}, "
                f"RSS {base[1]} kB -> max {self.max_rss} kB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="swarmd-soak-") as tmp:
        swarm = Swarm(Path(tmp), _config(args.nodes))
        soak = Soak(swarm, args.nodes, random.Random(seed))
        try:
            soak.run(args.seconds)
        finally:
            print(f"{soak.report()} (seed {seed})", flush=True)
            swarm.stop()
        if zombies(swarm.pid) or any(pid_alive(p) for p in children(swarm.pid)):
            print("soak: processes left behind after stop", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
