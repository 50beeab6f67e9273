"""Chaos soak: 16 nodes for a given time under random faults, invariants checked all along.

    .venv/bin/python -m tests.soak.soak --seconds 900

Each step injects one fault, then waits until the fleet has recovered: exactly N live, healthy
nodes, each slot with one process, no zombie. The faults: a node killed (-9), frozen (SIGSTOP),
crashing, reporting a restart code or a log code, printing as fast as it can; a deploy
(`swarmd reload`), a bare HUP, a quiet (TSTP) ended by a deploy, 16 misbehaving control clients,
and the supervisor stopped (TERM) and started again. All along, a thread reads the notify socket
and checks the watchdog's gaps (WATCHDOG_USEC=2s: systemd would kill at 2 s); after warm-up the
supervisor's open fds and memory must stay where they were; after a stop no process of the old
fleet is left; every fault's entry is in the log. Prints the counts; exits 1 on the first broken
invariant.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.process.harness import Swarm, base_config, children, pid_alive, zombies

FAULTS = ("kill", "freeze", "crash", "restart_code", "log_code", "flood", "reload", "hup",
          "quiet", "clients", "restart")
WEIGHTS = (3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1)
RECOVERY_TIMEOUT = 60.0
FD_SLACK = 4  # a node being started holds a few fds for a moment
RSS_SLACK_KB = 4096
WATCHDOG_USEC = 2_000_000


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


class Broken(SystemExit):
    """An invariant does not hold."""


class WatchdogWatch:
    """Reads a supervisor's notify socket all along; the gaps between WATCHDOG=1 pings."""

    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self.worst = 0.0
        self.pings = 0
        self._last: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self.swarm.notify.sock
        while not self._done.is_set():
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                self._done.wait(0.005)  # ok-sleep: polling interval
                continue
            except OSError:
                return
            now = time.monotonic()
            self.swarm.notify.messages.append((now, data.decode()))
            if b"WATCHDOG=1" in data:
                if self._last is not None:
                    self.worst = max(self.worst, now - self._last)
                self._last = now
                self.pings += 1

    def check(self) -> None:
        if self.worst >= WATCHDOG_USEC / 1e6:
            raise Broken(f"soak: a WATCHDOG=1 gap of {self.worst:.2f}s: systemd would have "
                         f"killed the supervisor")

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


class Soak:
    def __init__(self, tmp: Path, nodes: int, rng: random.Random) -> None:
        self.tmp = tmp
        self.nodes = nodes
        self.rng = rng
        self.incarnation = 0
        self.injected: collections.Counter[str] = collections.Counter()
        self.recoveries = 0
        self.recovery_times: list[float] = []
        self.worst: dict[str, float] = {}
        self.baseline: tuple[int, int] | None = None
        self.first: tuple[int, int] | None = None
        self.last = (0, 0)
        self.max_fds = 0
        self.max_rss = 0
        self.worst_watchdog = 0.0
        self.swarm, self.watch = self._start()

    def _start(self) -> tuple[Swarm, WatchdogWatch]:
        directory = self.tmp / f"swarm{self.incarnation}"
        directory.mkdir()
        self.incarnation += 1
        swarm = Swarm(directory, _config(self.nodes), watchdog_usec=WATCHDOG_USEC)
        swarm.wait_ready(timeout=60)
        return swarm, WatchdogWatch(swarm)

    def output(self) -> str:
        return self.swarm.output()

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

    def wait_recovered(self, since: float, check: object = None) -> float:
        deadline = since + RECOVERY_TIMEOUT
        while callable(check) and not check():
            if time.monotonic() > deadline:
                raise Broken(f"soak: a fault was never noticed\n{self.output()[-4000:]}")
            time.sleep(0.02)  # ok-sleep: polling interval
        while not self.recovered():
            self.watch.check()
            if time.monotonic() > deadline:
                raise Broken(f"soak: no recovery within {RECOVERY_TIMEOUT}s; status:\n"
                             f"{self.swarm.status()}\n{self.output()[-4000:]}")
            time.sleep(0.05)  # ok-sleep: polling interval
        self.watch.check()
        return time.monotonic() - since

    def _in_log(self, text: str, before: int) -> object:
        return lambda: self.output().count(text) > before

    def _replaced(self, pid: int) -> object:
        def check() -> bool:
            try:
                return pid not in {r["pid"] for r in self.swarm.status()["nodes"]}
            except Exception:
                return False
        return check

    def inject(self) -> tuple[str, object]:
        """One fault; returns its name and how to tell the supervisor noticed it."""
        fault = self.rng.choices(FAULTS, WEIGHTS)[0]
        rows = self.swarm.status()["nodes"]
        row = self.rng.choice(rows)
        pid, node = row["pid"], row["id"]
        out = self.output()
        check: object = None
        if fault == "kill":
            os.kill(pid, signal.SIGKILL)
            check = self._in_log(f"node {node} killed by SIGKILL", out.count(
                f"node {node} killed by SIGKILL"))
        elif fault == "freeze":
            os.kill(pid, signal.SIGSTOP)
            check = self._in_log(f"node {node} is hung", out.count(f"node {node} is hung"))
        elif fault == "crash":
            os.kill(pid, signal.SIGUSR1)
            check = self._in_log(f"node {node} killed by SIGUSR1",
                                 out.count(f"node {node} killed by SIGUSR1"))
        elif fault == "restart_code":
            os.kill(pid, signal.SIGUSR2)
            text = f"node {node}: healthy (0) -> memory_limit (3): restart"
            check = self._in_log(text, out.count(text))
        elif fault == "log_code":
            os.kill(pid, signal.SIGWINCH)
            text = f"node {node}: healthy (0) -> backlog (2)"
            check = self._in_log(text, out.count(text))
        elif fault == "flood":
            os.kill(pid, signal.SIGURG)
            text = f"node {node} wrote faster than its output limit"
            check = self._in_log(text, out.count(text))
        elif fault == "reload":
            self._cli("reload")
        elif fault == "hup":
            self.swarm.signal(signal.SIGHUP)
            check = self._in_log("reloaded:", out.count("reloaded:"))
        elif fault == "quiet":
            self.swarm.signal(signal.SIGTSTP)
            self.swarm.wait_status("quiet", timeout=30)
            self._cli("reload")
        elif fault == "clients":
            self._bad_clients()
        else:
            self._restart()
        self.injected[fault] += 1
        return fault, check

    def _cli(self, command: str) -> None:
        result = subprocess.run([sys.executable, "-m", "swarmd", command, "--runtime-dir",
                                 str(self.swarm.runtime)], capture_output=True, text=True,
                                timeout=RECOVERY_TIMEOUT)
        if result.returncode != 0:
            raise Broken(f"soak: swarmd {command} failed: {result.stderr}")

    def _bad_clients(self) -> None:
        """16 control clients that misbehave while an honest one asks for the status."""
        path = str(self.swarm.runtime / "control.sock")
        held = []
        for i in range(16):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            try:
                sock.connect(path)
                if i % 4 == 1:
                    sock.sendall(b"[" * 3000 + b"\n")
                elif i % 4 == 2:
                    sock.sendall(b'{"command": "sta')  # and never the rest
                elif i % 4 == 3:
                    sock.sendall(b'{"command": "status"}\n')  # and never read the reply
            except OSError:
                pass  # refused or reset: the server's right
            held.append(sock)
        try:
            self.swarm.status()  # an honest client is still answered meanwhile
        finally:
            time.sleep(0.5)  # ok-sleep: the bad clients linger a moment
            for sock in held:
                sock.close()

    def _restart(self) -> None:
        """TERM the supervisor: exit 0 and nothing of the old fleet left; then a new one."""
        old = self.swarm
        pids = children(old.pid)
        old.signal(signal.SIGTERM)
        code = old.wait_exit(timeout=30)
        self.watch.stop()
        self.worst_watchdog = max(self.worst_watchdog, self.watch.worst)
        left = [pid for pid in pids if pid_alive(pid)]
        if code != 0 or left:
            raise Broken(f"soak: TERM -> exit {code}, left alive: {left}")
        old.stop()
        self.swarm, self.watch = self._start()
        self.baseline = None  # a new process: its own warm-up

    def check_resources(self) -> None:
        fds, rss = _fd_count(self.swarm.pid), _rss_kb(self.swarm.pid)
        self.last = (fds, rss)
        self.max_fds, self.max_rss = max(self.max_fds, fds), max(self.max_rss, rss)
        if self.baseline is None:
            self.baseline = (fds, rss)
            self.first = self.first or self.baseline
            return
        if fds > self.baseline[0] + FD_SLACK:
            raise Broken(f"soak: fd leak: {fds} open, {self.baseline[0]} after warm-up")
        if rss > self.baseline[1] + RSS_SLACK_KB:
            raise Broken(f"soak: memory grew: {rss} kB RSS, {self.baseline[1]} kB after "
                         f"warm-up")

    def run(self, seconds: float) -> None:
        self.wait_recovered(time.monotonic())
        end = time.monotonic() + seconds
        warmup = 5
        since_start = 0
        while time.monotonic() < end:
            started = time.monotonic()
            fault, check = self.inject()
            since_start = 0 if fault == "restart" else since_start + 1
            took = self.wait_recovered(started, check)
            self.recoveries += 1
            self.recovery_times.append(took)
            self.worst[fault] = max(self.worst.get(fault, 0.0), took)
            if since_start >= warmup:
                self.check_resources()

    def close(self) -> None:
        self.watch.stop()
        self.worst_watchdog = max(self.worst_watchdog, self.watch.worst)
        self.swarm.stop()

    def report(self) -> str:
        times = sorted(self.recovery_times) or [0.0]
        first = self.first or (0, 0)
        return (f"soak: {sum(self.injected.values())} faults injected "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.injected.items()))}); "
                f"{self.recoveries} recoveries; recovery median {times[len(times) // 2]:.2f}s, "
                f"max {times[-1]:.2f}s (worst per fault: "
                f"{', '.join(f'{k} {v:.2f}s' for k, v in sorted(self.worst.items()))}); "
                f"worst WATCHDOG=1 gap {self.worst_watchdog:.2f}s "
                f"(WATCHDOG_USEC={WATCHDOG_USEC / 1e6:g}s); supervisor fds {first[0]} -> "
                f"{self.last[0]} (max {self.max_fds}), RSS {first[1]} kB -> {self.last[1]} kB "
                f"(max {self.max_rss} kB) after warm-up; {self.incarnation} supervisor(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="swarmd-soak-") as tmp:
        soak = Soak(Path(tmp), args.nodes, random.Random(seed))
        pid = soak.swarm.pid
        try:
            soak.run(args.seconds)
        finally:
            pid = soak.swarm.pid
            soak.close()
            print(f"{soak.report()} (seed {seed})", flush=True)
        if zombies(pid) or any(pid_alive(p) for p in children(pid)):
            print("soak: processes left behind after stop", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
