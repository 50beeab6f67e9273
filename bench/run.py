"""swarmd against a floor: one command, alternating runs, a table of medians and p90s.

    .venv/bin/python bench/run.py [--quick] [--swarmd DIR] [--only PHASES] [--json PATH]

See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same
MS = 1e6  # ns per ms


class BenchError(Exception):
    pass


# ---- /proc ------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(p) for p in handle.read().split())
        except FileNotFoundError:
            pass
    return found


def cpu_ns(pid: int) -> int:
    """Time on a CPU in ns (scheduler accounting, /proc/PID/schedstat; single-threaded)."""
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0])


def tree_cpu_ns(pids: list[int]) -> int:
    """Time on a CPU of every thread of these processes (threads that already ended aside)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                    total += int(handle.read().split()[0])
            except FileNotFoundError:
                pass
    return total


def wakeups(pid: int) -> int:
    return proc_kb(f"/proc/{pid}/status", ("voluntary_ctxt_switches",))


def cpu_ticks(pid: int) -> int:
    """utime + stime in clock ticks (/proc/PID/stat), the coarse cross-check."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_kb(path: str, keys: tuple[str, ...]) -> int:
    total = 0
    with open(path) as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in keys:
                total += int(rest.split()[0])
    return total


def rss_kb(pid: int) -> int:
    return proc_kb(f"/proc/{pid}/status", ("VmRSS",))


def uss_kb(pid: int) -> int:
    return proc_kb(f"/proc/{pid}/smaps_rollup",
                   ("Private_Clean", "Private_Dirty", "Private_Hugetlb"))


def pss_kb(pid: int) -> int:
    return proc_kb(f"/proc/{pid}/smaps_rollup", ("Pss",))


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


# ---- what the processes under test tell us ----------------------------------------------------


@dataclass
class Up:
    pid: int
    generation: int
    t: int  # monotonic ns of the first report, stamped by the node


@dataclass
class Inbox:
    """The notify socket and the bench socket of one instance, drained by a thread; arrival
    times are the kernel's (SO_TIMESTAMPNS), so a late bench thread does not skew them."""

    directory: Path
    notify: list[tuple[int, str, str]] = field(default_factory=list)  # (t, key, value)
    ups: dict[int, Up] = field(default_factory=dict)  # slot -> current process
    pids: set[int] = field(default_factory=set)  # every node pid that said up
    hangs: dict[int, int] = field(default_factory=dict)  # pid -> t of its last report
    conts: dict[int, int] = field(default_factory=dict)  # pid -> t it ran again
    floods: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offset = time.time_ns() - time.monotonic_ns()
        self.cond = threading.Condition()
        self.notify_path = str(self.directory / "notify.sock")
        self.bench_path = str(self.directory / "bench.sock")
        self._socks = {}
        for path, handler in ((self.notify_path, self._on_notify),
                              (self.bench_path, self._on_bench)):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
            self._socks[sock] = handler
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True, name="inbox")
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for sock in self._socks:
            sel.register(sock, selectors.EVENT_READ)
        sel.register(self._stop_r, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fileobj == self._stop_r:
                    sel.close()
                    return
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                batch = []
                while True:
                    try:
                        data, anc, _, _ = sock.recvmsg(65536, 64)
                    except BlockingIOError:
                        break
                    t = time.monotonic_ns()
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", value[:16])
                            t = sec * 1_000_000_000 + nsec - self.offset
                    batch.append((t, data.decode(errors="replace")))
                with self.cond:
                    for t, text in batch:
                        self._socks[sock](t, text)
                    self.cond.notify_all()

    def _on_notify(self, t: int, text: str) -> None:
        for line in text.split("\n"):
            key, _, value = line.partition("=")
            self.notify.append((t, key, value))

    def _on_bench(self, _t: int, text: str) -> None:
        parts = text.split()
        kind, nums = parts[0], [int(p) for p in parts[1:]]
        if kind == "up":
            self.ups[nums[0]] = Up(nums[2], nums[1], nums[3])
            self.pids.add(nums[2])
        elif kind == "hang":
            self.hangs[nums[1]] = nums[2]
        elif kind == "cont":
            self.conts[nums[1]] = nums[2]
        elif kind == "flood":
            self.floods.setdefault(nums[0], []).append((nums[1], nums[2], nums[3]))

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        with self.cond:
            result = self.cond.wait_for(predicate, timeout)
        if not result:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")
        return result

    def first(self, key: str, after: int = 0) -> int | None:
        for t, k, _ in self.notify:
            if k == key and t >= after:
                return t
        return None

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for sock in self._socks:
            sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


# ---- one supervisor under test ----------------------------------------------------------------


# --cgroups: every swarmd instance runs in a cgroup of its own under this v2 directory, marked
# delegated as systemd marks a Delegate=yes unit's (trusted.delegate), so swarmd splits it into
# node-N groups, moves each node into its group and ends a node with cgroup.kill, as under the
# unit. (The unified hierarchy of this hybrid host has no controllers: no memory.current.)
CGROUP_PARENT = Path("/sys/fs/cgroup/unified/swarmd-bench")


def delegated_group(name: str) -> Path:
    group = CGROUP_PARENT / name
    group.mkdir(parents=True)
    os.setxattr(group, "trusted.delegate", b"1")
    return group


def remove_group(group: Path) -> None:
    """Kill what is left in it, then remove it, children first."""
    if not group.exists():
        return
    try:
        (group / "cgroup.kill").write_text("1")
    except OSError:
        pass
    for _ in range(200):  # populated 0 comes a moment after the kill
        if "populated 0" in (group / "cgroup.events").read_text():
            break
        time.sleep(0.01)
    for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        group.rmdir()
    except OSError:
        pass


SWARMD_DEFAULTS: dict[str, Any] = {
    "timeouts": {"boot": "60s", "report": "60s", "shutdown": "10s", "drain": "10s"},
    "restart": {"delay": 0, "max_delay": "1s", "reset_after": "60s", "give_up_after": 0},
}


class Instance:
    """`python -m swarmd run` or `python bench/floor.py`, with its own notify and bench socket."""

    def __init__(self, kind: str, nodes: int, app: str, root: Path, swarmd_dir: Path, *,
                 period: float = 1.0, config: dict[str, Any] | None = None,
                 watchdog_usec: int | None = None, cgroups: bool = False) -> None:
        self.kind, self.nodes = kind, nodes
        self.dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{nodes}-", dir=root))
        self.inbox = Inbox(self.dir)
        env = dict(os.environ)
        for name in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "NOTIFY_SOCKET"):
            env.pop(name, None)
        env.update({
            "PYTHONPATH": os.pathsep.join([str(swarmd_dir), str(BENCH)]),
            "NOTIFY_SOCKET": self.inbox.notify_path,
            "BENCH_SOCKET": self.inbox.bench_path,
            "BENCH_PERIOD": str(period),
            "RUNTIME_DIRECTORY": str(self.dir / "run"),
        })
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        if kind == "swarmd":
            cfg: dict[str, Any] = {"nodes": nodes, "app": app, **SWARMD_DEFAULTS}
            for key, value in (config or {}).items():
                cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
            self.config = cfg
            (self.dir / "swarmd.yaml").write_text(yaml.safe_dump(cfg))
            argv = [sys.executable, "-m", "swarmd", "run", "-c", str(self.dir / "swarmd.yaml")]
        else:
            self.config = {}
            argv = [sys.executable, str(BENCH / "floor.py"), str(nodes), app]
        self.log = open(self.dir / "output.log", "wb")  # noqa: SIM115 - closed in close()
        self.launched = time.monotonic_ns()
        self.group = delegated_group(self.dir.name) if cgroups and kind == "swarmd" else None
        procs = str(self.group / "cgroup.procs") if self.group is not None else None

        def enter_group() -> None:
            if procs is not None:
                with open(procs, "w") as handle:
                    handle.write("0")

        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.dir, preexec_fn=enter_group if procs else None)
        self.pid = self.proc.pid
        self.ready_at: int | None = None

    def timeout(self, name: str) -> float:
        from swarmd.config import parse_duration
        return parse_duration(self.config["timeouts"][name])

    def output(self) -> str:
        return (self.dir / "output.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from launch to READY=1 (and every node said up); -> ms."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} exited {self.proc.returncode}:\n"
                                 f"{self.output()[-2000:]}")
            return self.inbox.first("READY") is not None and len(self.inbox.ups) >= self.nodes
        self.inbox.wait(ready, timeout, f"{self.kind} READY=1 with {self.nodes} nodes")
        self.ready_at = self.inbox.first("READY")
        assert self.ready_at is not None
        if "timeouts.boot passed" in self.output():
            raise BenchError(f"{self.kind}: READY came from timeouts.boot, not the nodes")
        return (self.ready_at - self.launched) / MS

    def node_pids(self) -> list[int]:
        return children(self.pid)

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM -> the supervisor and every node gone, in ms (watched through pidfds)."""
        sel = selectors.DefaultSelector()
        for pid in {self.pid, *self.node_pids()}:
            try:
                sel.register(os.pidfd_open(pid), selectors.EVENT_READ)
            except (ProcessLookupError, OSError):
                pass
        start = time.monotonic_ns()
        os.kill(self.pid, signal.SIGTERM)
        left, end = len(sel.get_map()), start
        deadline = time.monotonic() + timeout
        while left:
            events = sel.select(max(0.0, deadline - time.monotonic()))
            if not events:
                break
            end = time.monotonic_ns()
            for key, _ in events:
                sel.unregister(key.fd)
                os.close(key.fd)
                left -= 1
        for key in list(sel.get_map().values()):
            os.close(key.fd)
        sel.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.kind} still running 10 s after its processes were "
                             f"watched for {timeout}s:\n{self.output()[-2000:]}") from None
        if left:
            raise BenchError(f"{self.kind}: {left} process(es) still alive {timeout}s after TERM")
        return (end - start) / MS

    def close(self) -> None:
        """Whatever happened, leave nothing behind."""
        if self.proc.poll() is None:
            pids = self.node_pids()
            self.proc.kill()
            self.proc.wait()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self.inbox.pids:  # a floor node whose supervisor died is nobody's child
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.group is not None:
            remove_group(self.group)
        self.inbox.close()
        self.log.close()


# ---- statistics and the table -----------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass
class Figure:
    name: str
    n: int
    unit: str
    floor: list[float] = field(default_factory=list)
    swarmd: list[float] = field(default_factory=list)
    target: str = ""
    check: Callable[[Figure], bool | None] | None = None
    note: str = ""

    def ratio(self) -> float | None:
        f, s = median(self.floor), median(self.swarmd)
        return s / f if f and s is not None else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms",):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if unit == "%":
        return f"{value:.3f}"
    if unit in ("/s", "KiB"):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def cell(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    return f"{fmt(median(values), unit)} ({fmt(p90(values), unit)})"


def ratio_at_most(limit: float) -> Callable[[Figure], bool | None]:
    def check(fig: Figure) -> bool | None:
        r = fig.ratio()
        return None if r is None else r <= limit
    return check


def swarmd_at_most(limit: float) -> Callable[[Figure], bool | None]:
    def check(fig: Figure) -> bool | None:
        m = median(fig.swarmd)
        return None if m is None else m <= limit
    return check


def swarmd_at_least(limit: float) -> Callable[[Figure], bool | None]:
    def check(fig: Figure) -> bool | None:
        m = median(fig.swarmd)
        return None if m is None else m >= limit
    return check


def table(figures: list[Figure]) -> str:
    header = ("figure", "N", "unit", "floor med (p90)", "swarmd med (p90)", "ratio", "target",
              "")
    rows = [header]
    for fig in figures:
        ok = fig.check(fig) if fig.check else None
        verdict = "" if ok is None else ("ok" if ok else "MISS")
        r = fig.ratio()
        rows.append((fig.name, str(fig.n), fig.unit, cell(fig.floor, fig.unit),
                     cell(fig.swarmd, fig.unit), "-" if r is None else f"{r:.2f}x",
                     fig.target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# ---- the phases -------------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    start_sizes: tuple[int, ...] = (16, 64, 256)
    sizes: tuple[int, ...] = (16, 64)
    start_rounds: dict[int, int] = field(default_factory=dict)
    kill_rounds: int = 2
    kills: int = 10
    hangs: int = 4
    idle_window: float = 30.0
    idle_slices: int = 6
    idle_settle: float = 2.0
    flood_rounds: int = 2
    flood_window: float = 5.0
    work_seconds: float = 60.0

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, start_rounds={16: 3, 64: 3, 256: 1}, kill_rounds=1, kills=8,
                       hangs=3, idle_window=8.0, idle_slices=4, idle_settle=1.0, flood_rounds=1,
                       flood_window=2.0, work_seconds=15.0)
        return cls(False, start_rounds={16: 7, 64: 7, 256: 3}, kill_rounds=3, kills=12,
                   flood_rounds=3)


class Bench:
    def __init__(self, plan: Plan, swarmd_dir: Path, root: Path) -> None:
        self.plan, self.swarmd_dir, self.root = plan, swarmd_dir, root
        self.cgroups = False
        self.figures: dict[tuple[str, int], Figure] = {}
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []

    def figure(self, name: str, n: int, unit: str, **kwargs: Any) -> Figure:
        key = (name, n)
        if key not in self.figures:
            self.figures[key] = Figure(name, n, unit, **kwargs)
        return self.figures[key]

    def instance(self, kind: str, nodes: int, app: str = "swarmd_benchapp:idle",
                 **kwargs: Any) -> Instance:
        return Instance(kind, nodes, app, self.root, self.swarmd_dir, cgroups=self.cgroups,
                        **kwargs)

    def say(self, text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')} load {loadavg()}] {text}", flush=True)

    # start -> READY=1, and stop ------------------------------------------------------------

    def phase_start(self) -> None:
        for n in self.plan.start_sizes:
            start = self.figure("start -> READY=1", n, "ms", target="<= 2x floor",
                                check=ratio_at_most(2.0))
            stop = self.figure("stop (TERM -> all gone)", n, "ms", target="<= 2x floor",
                               check=ratio_at_most(2.0))
            for _ in range(self.plan.start_rounds.get(n, 1)):
                for kind in ("floor", "swarmd"):
                    inst = self.instance(kind, n)
                    try:
                        ready = inst.wait_ready()
                        time.sleep(0.3)
                        stopped = inst.stop()
                    finally:
                        inst.close()
                    getattr(start, kind).append(ready)
                    getattr(stop, kind).append(stopped)
                    self.say(f"N={n} {kind}: start {ready:.0f} ms, stop {stopped:.0f} ms")

    # kill -> replacement, hung detection ---------------------------------------------------

    def kill_one(self, inst: Instance, slot: int) -> tuple[float, Up]:
        box = inst.inbox
        with box.cond:
            old = box.ups[slot].pid
        t0 = time.monotonic_ns()
        os.kill(old, signal.SIGKILL)
        box.wait(lambda: box.ups[slot].pid != old, 20, f"node {slot} to be replaced")
        with box.cond:
            up = box.ups[slot]
        return (up.t - t0) / MS, up

    def hang(self, inst: Instance, pids: list[int], spacing: float) -> list[float]:
        """SIGUSR1: the node reports, then freezes itself; from report expiry to running again
        (the supervisor's TERM + CONT), as the node's own clock sees it."""
        box = inst.inbox
        report_ns = int(inst.timeout("report") * 1e9)
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
            time.sleep(spacing)
        limit = inst.timeout("boot") + inst.timeout("report") + 10
        box.wait(lambda: all(pid in box.conts for pid in pids), limit,
                 f"{len(pids)} frozen node(s) to get TERM + CONT")
        with box.cond:
            return [(box.conts[pid] - box.hangs[pid] - report_ns) / MS for pid in pids]

    def phase_kill(self) -> None:
        plan = self.plan
        cfg = {"timeouts": {"boot": "3s", "report": "1500ms"}}
        for n in plan.sizes:
            kill = self.figure("kill -> replacement up", n, "ms", target="<= 1.5x floor",
                               check=ratio_at_most(1.5))
            hung = self.figure("hung: report expiry -> TERM", n, "ms", target="<= 50 ms",
                               check=swarmd_at_most(50.0))
            early = self.figure("hung, node younger than boot", n, "ms", target="<= 50 ms",
                                check=swarmd_at_most(50.0),
                                note="a node that hangs before its timeouts.boot deadline")
            for _ in range(plan.kill_rounds):
                for kind in ("floor", "swarmd"):
                    inst = self.instance(kind, n, period=0.5, config=cfg)
                    try:
                        inst.wait_ready()
                        if kind == "swarmd":  # every original node past its boot deadline
                            time.sleep(max(0.0, inst.timeout("boot") + 0.3
                                           - (time.monotonic_ns() - inst.launched) / 1e9))
                        samples = []
                        killed = set()
                        for k in range(plan.kills):
                            slot = (k * 5) % n
                            killed.add(slot)
                            samples.append(self.kill_one(inst, slot)[0])
                            time.sleep(0.05)
                        getattr(kill, kind).extend(samples)
                        text = f"kill {median(samples):.1f} ms"
                        if kind == "swarmd":
                            old = [s for s in range(n) if s not in killed][:plan.hangs + 1]
                            with inst.inbox.cond:
                                pids = [inst.inbox.ups[s].pid for s in old[:-1]]
                            got = self.hang(inst, pids, 0.2)
                            hung.swarmd.extend(got)
                            _, up = self.kill_one(inst, old[-1])  # a fresh node, then hang it
                            young = self.hang(inst, [up.pid], 0.0)
                            early.swarmd.extend(young)
                            text += (f", hung {median(got):.1f} ms, young hung "
                                     f"{young[0]:.0f} ms")
                        inst.stop()
                    finally:
                        inst.close()
                    self.say(f"N={n} {kind}: {text}")
        self.kill_with_shipped_defaults(plan.sizes[0])

    def kill_with_shipped_defaults(self, n: int) -> None:
        """kill -> replacement with the restart section as shipped (delay 1s): a slot's first
        failure in a row restarts at once, so a kill here costs what it costs with delay 0."""
        kill = self.figure("kill -> replacement up, shipped restart defaults", n, "ms",
                           note="restart.delay 1s: each kill is its slot's first failure")
        inst = self.instance("swarmd", n, period=0.5, config={
            "restart": {"delay": "1s", "max_delay": "60s", "reset_after": "60s",
                        "give_up_after": 10}})
        try:
            inst.wait_ready()
            for slot in range(min(n, self.plan.kills)):
                kill.swarmd.append(self.kill_one(inst, slot)[0])
                time.sleep(0.05)
            inst.stop()
        finally:
            inst.close()
        self.say(f"N={n} swarmd, shipped restart defaults: kill {median(kill.swarmd):.1f} ms")

    # idle CPU and memory -------------------------------------------------------------------

    def node_memory(self, inst: Instance) -> list[float]:
        out = []
        for pid in inst.node_pids():
            try:
                out.append(float(uss_kb(pid)))
            except (FileNotFoundError, ProcessLookupError):
                pass
        return out

    @staticmethod
    def idle_sample(insts: dict[str, Instance], pids: dict[str, list[int]]
                    ) -> dict[str, tuple[int, int, int, int]]:
        return {k: (cpu_ns(i.pid), wakeups(i.pid), tree_cpu_ns(pids[k]), time.monotonic_ns())
                for k, i in insts.items()}

    def phase_idle(self) -> None:
        """Both fleets up at once, each supervisor's CPU time read over the same sub-windows
        (CPU time, not wall time, is measured, so both see the same noise)."""
        plan = self.plan
        for n in plan.start_sizes:
            cpu = self.figure("idle CPU (1 report/s/node)", n, "%",
                              target="<= 0.5% at N=64" if n == 64 else "",
                              check=swarmd_at_most(0.5) if n == 64 else None)
            ticks_fig = self.figure("  same, utime+stime (whole window)", n, "%")
            wake = self.figure("supervisor wakeups", n, "/s")
            nodes_cpu = self.figure("idle CPU of all nodes together", n, "%")
            rss = self.figure("supervisor RSS", n, "KiB")
            uss = self.figure("node USS (preload)", n, "KiB")
            insts: dict[str, Instance] = {}
            try:
                for kind in ("floor", "swarmd"):
                    insts[kind] = self.instance(kind, n, config={"timeouts": {"report": "10s"}})
                    insts[kind].wait_ready()  # one fleet boots at a time
                time.sleep(plan.idle_settle)
                pids = {k: i.node_pids() for k, i in insts.items()}

                ticks0 = {k: (cpu_ticks(i.pid), time.monotonic_ns()) for k, i in insts.items()}
                for _ in range(plan.idle_slices):
                    before = self.idle_sample(insts, pids)
                    time.sleep(plan.idle_window / plan.idle_slices)
                    after = self.idle_sample(insts, pids)
                    for kind in insts:
                        (ns0, w0, tree0, t0), (ns1, w1, tree1, t1) = before[kind], after[kind]
                        getattr(cpu, kind).append(100.0 * (ns1 - ns0) / (t1 - t0))
                        getattr(wake, kind).append((w1 - w0) / ((t1 - t0) / 1e9))
                        getattr(nodes_cpu, kind).append(100.0 * (tree1 - tree0) / (t1 - t0))
                text = []
                for kind, inst in insts.items():
                    ticks = cpu_ticks(inst.pid) - ticks0[kind][0]
                    wall = (time.monotonic_ns() - ticks0[kind][1]) / 1e9
                    getattr(ticks_fig, kind).append(100.0 * ticks / os.sysconf("SC_CLK_TCK") / wall)
                    getattr(rss, kind).append(float(rss_kb(inst.pid)))
                    getattr(uss, kind).extend(self.node_memory(inst))
                    text.append(f"{kind} {median(getattr(cpu, kind)[-plan.idle_slices:]):.3f}%")
                for inst in insts.values():
                    inst.stop()
            finally:
                for inst in insts.values():
                    inst.close()
            self.say(f"N={n} idle CPU over {plan.idle_window:.0f}s: " + ", ".join(text))

    def phase_metrics(self) -> None:
        """Metrics on (metrics.listen, every node with 20 app series): the supervisor's idle
        CPU and wake-ups at rest, then scraped every second, and one scrape's answer time and
        CPU at 256 nodes. swarmd only (the floor has no metrics); its idle figures are the
        reference."""
        plan = self.plan
        window = plan.idle_window
        for n in plan.start_sizes:
            cpu = self.figure("idle CPU, metrics on, not scraped", n, "%")
            wake = self.figure("supervisor wakeups, metrics on", n, "/s")
            scraped = self.figure("CPU, metrics on, scraped every 1 s", n, "%",
                                  target="<= 0.5% + scrape at N=64" if n == 64 else "")
            answer = self.figure("scrape answer time (20 app series/node)", n, "ms")
            per_scrape = self.figure("supervisor CPU per scrape", n, "ms")
            size = self.figure("exposition size", n, "KiB")
            inst = self.instance("swarmd", n, app="swarmd_benchapp:metrics20",
                                 config={"timeouts": {"report": "10s"},
                                         "metrics": {"listen": "127.0.0.1:0"}})
            try:
                inst.wait_ready()
                time.sleep(plan.idle_settle)
                port = int(json.loads(subprocess.run(
                    [sys.executable, "-m", "swarmd", "status", "--json", "--runtime-dir",
                     str(inst.dir / "run")], capture_output=True, text=True, cwd=self.swarmd_dir,
                    env={**os.environ, "PYTHONPATH": str(self.swarmd_dir)},
                    check=True).stdout)["metrics"]["listen"].rsplit(":", 1)[1])
                ns0, w0, t0 = cpu_ns(inst.pid), wakeups(inst.pid), time.monotonic_ns()
                time.sleep(window)
                ns1, w1, t1 = cpu_ns(inst.pid), wakeups(inst.pid), time.monotonic_ns()
                cpu.swarmd.append(100.0 * (ns1 - ns0) / (t1 - t0))
                wake.swarmd.append((w1 - w0) / ((t1 - t0) / 1e9))
                idle_rate = (ns1 - ns0) / (t1 - t0)  # CPU ns per ns at rest
                scrapes = 0
                ns0, t0 = cpu_ns(inst.pid), time.monotonic_ns()
                until = time.monotonic() + window
                while time.monotonic() < until:
                    started = time.monotonic()
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=10) as reply:
                        body = reply.read()
                    answer.swarmd.append((time.monotonic() - started) * 1e3)
                    scrapes += 1
                    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
                ns1, t1 = cpu_ns(inst.pid), time.monotonic_ns()
                scraped.swarmd.append(100.0 * (ns1 - ns0) / (t1 - t0))
                per_scrape.swarmd.append(max(0.0, (ns1 - ns0) - idle_rate * (t1 - t0))
                                         / scrapes / 1e6)
                size.swarmd.append(len(body) / 1024)
                inst.stop()
            finally:
                inst.close()
            self.say(f"N={n} metrics: idle {cpu.swarmd[-1]:.3f}%, {wake.swarmd[-1]:.1f} "
                     f"wakeups/s, scraped {scraped.swarmd[-1]:.3f}%, answer "
                     f"{median(answer.swarmd):.1f} ms, {per_scrape.swarmd[-1]:.1f} ms CPU/scrape")

    def phase_memory(self) -> None:
        """Node USS with and without preload, with a light and a heavier (stdlib) app."""
        n = 16
        for app, label in (("swarmd_benchapp:idle", "bench app"),
                           ("swarmd_benchheavy:idle", "app importing 13 stdlib modules")):
            for preload in (True, False):
                fig = self.figure(f"node USS, {label}, preload {str(preload).lower()}", n,
                                  "KiB")
                sup = self.figure(f"supervisor RSS, {label}, preload {str(preload).lower()}",
                                  n, "KiB")
                for kind in ("floor", "swarmd") if preload else ("swarmd",):
                    inst = self.instance(kind, n, app=app, config={"preload": preload})
                    try:
                        inst.wait_ready()
                        time.sleep(1.5)
                        getattr(fig, kind).extend(self.node_memory(inst))
                        getattr(sup, kind).append(float(rss_kb(inst.pid)))
                        inst.stop()
                    finally:
                        inst.close()
                self.say(f"memory {label} preload={preload}: node USS swarmd "
                         f"{median(fig.swarmd) or 0:.0f} KiB, floor "
                         f"{median(fig.floor) or 0:.0f} KiB")

    def phase_work(self) -> None:
        """Node USS and PSS of a working app (30 imports, cyclic garbage, the collector at
        work) after `work_seconds`: what preload keeps shared once the nodes run. Preload on
        and off for swarmd; the floor forks after a plain import (no freeze). The same with
        preload on but no freeze: run it with --swarmd pointing at a checkout before it."""
        n = 8
        for preload in (True, False):
            tag = f"preload {str(preload).lower()}"
            uss = self.figure(f"working node USS after {self.plan.work_seconds:.0f}s, {tag}",
                              n, "KiB", target="<= 1.3x floor" if preload else "",
                              check=ratio_at_most(1.3) if preload else None)
            pss = self.figure(f"working node PSS after {self.plan.work_seconds:.0f}s, {tag}",
                              n, "KiB")
            sup = self.figure(f"supervisor USS, working app, {tag}", n, "KiB")
            total = self.figure(f"fleet PSS (supervisor + nodes), working app, {tag}", n,
                                "KiB")
            for kind in ("floor", "swarmd") if preload else ("swarmd",):
                inst = self.instance(kind, n, app="swarmd_benchwork:work",
                                     config={"preload": preload})
                try:
                    inst.wait_ready()
                    time.sleep(self.plan.work_seconds)
                    whole = pss_kb(inst.pid)
                    for pid in inst.node_pids():
                        try:
                            getattr(uss, kind).append(float(uss_kb(pid)))
                            getattr(pss, kind).append(float(pss_kb(pid)))
                            whole += pss_kb(pid)
                        except (FileNotFoundError, ProcessLookupError):
                            pass
                    getattr(sup, kind).append(float(uss_kb(inst.pid)))
                    getattr(total, kind).append(float(whole))
                    inst.stop()
                finally:
                    inst.close()
                self.say(f"work {tag} {kind}: node USS {median(getattr(uss, kind)) or 0:.0f} "
                         f"KiB, PSS {median(getattr(pss, kind)) or 0:.0f} KiB")

    # report throughput ---------------------------------------------------------------------

    @staticmethod
    def reports_read(series: list[tuple[int, int, int]], t0: int, t1: int
                     ) -> tuple[float, float, float] | None:
        """(reports read, seconds, mean pipe fill) between the samples nearest t0 and t1."""
        inside = [s for s in series if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None
        (ta, wa, qa), (tb, wb, qb) = inside[0], inside[-1]
        read = (wb - qb // 2) - (wa - qa // 2)
        fill = statistics.mean(q for _, _, q in inside) / 65536
        return read, (tb - ta) / 1e9, fill

    def phase_flood(self) -> None:
        plan = self.plan
        for n in plan.sizes:
            rate = self.figure("report throughput", n, "/s", target=">= 50,000/s",
                               check=swarmd_at_least(50_000))
            gap = self.figure("worst WATCHDOG=1 gap (1s)", n, "ms", target="<= 550 ms",
                              check=swarmd_at_most(550.0))
            costs = self.figure("supervisor CPU per report", n, "us")
            for _ in range(plan.flood_rounds):
                for kind in ("floor", "swarmd"):
                    inst = self.instance(kind, n, app="swarmd_benchapp:flood",
                                         watchdog_usec=1_000_000)
                    try:
                        inst.wait_ready()
                        time.sleep(1.0)
                        cpu0, t0 = cpu_ns(inst.pid), time.monotonic_ns()
                        time.sleep(plan.flood_window)
                        cpu1, t1 = cpu_ns(inst.pid), time.monotonic_ns()
                        with inst.inbox.cond:
                            parts = [self.reports_read(s, t0, t1)
                                     for s in inst.inbox.floods.values()]
                            dogs = [t for t, k, _ in inst.inbox.notify if k == "WATCHDOG"]
                        parts = [p for p in parts if p]
                        total = sum(r / s for r, s, _ in parts if s > 0)
                        fill = statistics.mean(f for _, _, f in parts) if parts else 0.0
                        getattr(rate, kind).append(total)
                        window_reports = total * (t1 - t0) / 1e9
                        getattr(costs, kind).append((cpu1 - cpu0) / 1e3 / max(window_reports, 1))
                        text = (f"{total:,.0f} reports/s from {len(parts)} nodes, pipes "
                                f"{100 * fill:.0f}% full, supervisor CPU "
                                f"{100 * (cpu1 - cpu0) / (t1 - t0):.0f}%")
                        start = inst.ready_at or t0  # from READY=1 to the window's end; a
                        dogs = [start, *(t for t in dogs if start < t < t1), t1]  # ping still
                        # due at the end counts as a gap too
                        worst = max(b - a for a, b in zip(dogs, dogs[1:], strict=False))
                        getattr(gap, kind).append(worst / MS)
                        text += f", worst watchdog gap {worst / MS:.0f} ms ({len(dogs) - 1} pings)"
                        inst.stop()
                    finally:
                        inst.close()
                    self.say(f"N={n} {kind} flood: {text}")


PHASES = ("start", "kill", "idle", "metrics", "memory", "work", "flood")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, short windows")
    parser.add_argument("--swarmd", type=Path, default=REPO,
                        help="directory holding the swarmd package to measure (default: this "
                             "repository); e.g. a patched copy")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases out of {','.join(PHASES)}")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    parser.add_argument("--cgroups", action="store_true",
                        help=f"run each swarmd in a delegated cgroup under {CGROUP_PARENT} (root; "
                             f"a node group each, as under a Delegate=yes unit)")
    args = parser.parse_args(argv)
    phases = [p for p in args.only.split(",") if p]
    for phase in phases:
        if phase not in PHASES:
            parser.error(f"unknown phase {phase!r}")
    swarmd_dir = args.swarmd.resolve()
    if not (swarmd_dir / "swarmd" / "__init__.py").exists():
        parser.error(f"no swarmd package in {swarmd_dir}")
    sys.path.insert(0, str(swarmd_dir))
    plan = Plan.make(args.quick)
    root = Path(tempfile.mkdtemp(prefix="swarmd-bench-"))
    bench = Bench(plan, swarmd_dir, root)
    bench.cgroups = args.cgroups
    began, load0 = time.monotonic(), loadavg()
    mode = ("quick" if args.quick else "full") + (", cgroups" if args.cgroups else "")
    print(f"swarmd bench ({mode}): swarmd from {swarmd_dir}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load0}", flush=True)
    try:
        for phase in phases:
            print(f"phase {phase}", flush=True)
            try:
                getattr(bench, f"phase_{phase}")()
            except (BenchError, OSError) as exc:  # report, keep what was measured, go on
                print(f"phase {phase} failed: {type(exc).__name__}: {exc}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: partial results", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    took = time.monotonic() - began
    print()
    print(table(list(bench.figures.values())))
    print()
    print("median (p90) over every sample; ratio = swarmd median / floor median. Runs alternate "
          "floor, swarmd, floor, swarmd; idle CPU measures both fleets over one window.")
    print(f"took {took:.0f} s; load average {load0} at start, {loadavg()} at end "
          f"(other work on this machine skews absolute figures, less so the ratios)")
    if args.json:
        args.json.write_text(json.dumps({
            "quick": args.quick, "took_s": took, "load": [load0, loadavg()],
            "figures": [{"name": f.name, "n": f.n, "unit": f.unit, "floor": f.floor,
                         "swarmd": f.swarmd, "target": f.target} for f in bench.figures.values()],
            "raw": bench.raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
