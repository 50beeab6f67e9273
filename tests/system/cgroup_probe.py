"""Run inside a `Delegate=yes` unit of the test container by test_cgroups.py (not a test itself).

It uses swarmd.node.cgroups alone, no supervisor: discover() and the move into `supervisor`,
node groups, a node with a helper and a double-forked daemon, cpu.stat, cgroup.events through
epoll, cgroup.kill; then it measures moving a freshly forked child into its node group, the
supervisor writing its pid vs the child writing "0" itself. Results go to OUT (JSON); at STEP
files it waits for the test (which looks at `systemctl status` meanwhile).

    python cgroup_probe.py DIR ROUNDS [SPACING]   (seconds between two moves, default 0)
"""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import sys
import time
from pathlib import Path

import yaml  # noqa: F401 - the supervisor's weight: a fork copies what swarmd's would

import swarmd.supervisor.core  # noqa: F401
from swarmd.node import cgroups

WAIT = 30.0


def wait_file(path: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"probe: {path} never came")
        time.sleep(0.02)  # ok-sleep: poll for the test's go-ahead


def spawn_node(tree: cgroups.CgroupTree, node_id: int, work: str) -> int:
    """A node in node-N (the supervisor moves it), which starts a helper child and a
    double-forked daemon (setsid), or burns CPU for a moment; all sleep afterwards."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        os.setpgid(0, 0)
        os.read(go_r, 1)  # moved into node-N before anything is started
        if work == "helpers":
            if os.fork() == 0:  # a helper
                signal.pause()
            if os.fork() == 0:  # a daemon: fork, setsid, fork again, parent exits
                os.setsid()
                if os.fork() == 0:
                    signal.pause()
                os._exit(0)
            os.wait()  # the daemon's first half
        else:
            end = time.process_time() + 0.3
            while time.process_time() < end:
                pass
        os.write(ready_w, b"x")
        signal.pause()
        os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    assert tree.attach(node_id, pid), tree.problem
    os.write(go_w, b"x")
    os.read(ready_r, 1)
    os.close(ready_r)
    os.close(go_w)
    return pid


def epoll_until_empty(tree: cgroups.CgroupTree, node_id: int) -> dict[str, object]:
    """cgroup.kill, then wait for `populated 0` through EPOLLPRI on cgroup.events."""
    fd = tree.events_fd(node_id)
    assert fd is not None, tree.problem
    poller = select.epoll()
    poller.register(fd, select.EPOLLPRI)
    before = cgroups.read_events(fd)
    started = time.monotonic()
    kill = tree.kill(node_id)
    wakeups, events = 0, 0
    populated = before
    deadline = started + 10
    while populated and time.monotonic() < deadline:
        for _, mask in poller.poll(deadline - time.monotonic()):
            wakeups += 1
            events |= mask
        populated = cgroups.read_events(fd)
    elapsed = time.monotonic() - started
    poller.close()
    os.close(fd)
    return {"kill": kill.value, "populated_before": before, "populated_after": populated,
            "epoll_wakeups": wakeups, "epoll_events": events,
            "epollpri": bool(events & select.EPOLLPRI), "ms": elapsed * 1000}


def move_costs(tree: cgroups.CgroupTree, node_id: int, rounds: int,
               spacing: float) -> dict[str, list[float]]:
    """Per round, alternating: fork a child, and move it into node-N by (a) the parent writing
    its pid, (b) the child writing "0" to a cgroup.procs fd opened before the fork, (c) the child
    opening the file and writing "0". Each write timed where it runs, in microseconds; then the
    group is killed (cgroup.kill) and the child reaped."""
    out: dict[str, list[float]] = {"parent_pid": [], "child_fd": [], "child_open": [],
                                   "kill_write": []}
    path = f"{tree.path(node_id)}/cgroup.procs"
    procs_fd = tree.procs_fd(node_id)
    assert procs_fd is not None, tree.problem
    for i in range(rounds * 3):
        how = ("parent_pid", "child_fd", "child_open")[i % 3]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            took = 0
            if how == "child_fd":
                t = time.perf_counter_ns()
                os.write(procs_fd, b"0")
                took = time.perf_counter_ns() - t
            elif how == "child_open":
                t = time.perf_counter_ns()
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                os.write(fd, b"0")
                os.close(fd)
                took = time.perf_counter_ns() - t
            os.write(w, str(took).encode())
            signal.pause()
            os._exit(0)
        os.close(w)
        if how == "parent_pid":
            t = time.perf_counter_ns()
            ok = tree.attach(node_id, pid)
            took = time.perf_counter_ns() - t
            assert ok, tree.problem
            os.read(r, 64)
        else:
            took = int(os.read(r, 64))
        os.close(r)
        assert pid in (tree.procs(node_id) or []), f"{how}: {pid} not in node-{node_id}"
        out[how].append(took / 1000)
        t = time.perf_counter_ns()
        assert tree.kill(node_id) is cgroups.Kill.CGROUP_KILL, tree.problem
        out["kill_write"].append((time.perf_counter_ns() - t) / 1000)
        os.waitpid(pid, 0)
        time.sleep(spacing)  # ok-sleep: a restart comes alone, not right after another move
    os.close(procs_fd)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "median": statistics.median(ordered),
            "p90": ordered[int(0.9 * (len(ordered) - 1))], "max": ordered[-1]}


def main() -> None:
    where, rounds = Path(sys.argv[1]), int(sys.argv[2])
    spacing = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    result: dict[str, object] = {"pid": os.getpid()}
    setup = cgroups.discover()
    result["setup"] = setup.message
    if setup.tree is None:
        (where / "result.json").write_text(json.dumps(result))
        raise SystemExit(setup.message)
    tree = setup.tree
    result["own_cgroup"] = Path("/proc/self/cgroup").read_text()
    for node_id in (1, 2):
        assert tree.create(node_id), tree.problem
    helpers = spawn_node(tree, 1, "helpers")
    burner = spawn_node(tree, 2, "burn")
    result["node1"] = {"pid": helpers, "procs": tree.procs(1), "populated": tree.populated(1)}
    result["node2"] = {"pid": burner, "procs": tree.procs(2), "cpu_usec": tree.cpu_usec(2)}
    result["node1_cpu_usec"] = tree.cpu_usec(1)
    result["memory_current"] = tree.memory_current(1)
    (where / "nodes.json").write_text(json.dumps(result))
    wait_file(where / "go")  # the test reads `systemctl status` meanwhile
    result["kill1"] = epoll_until_empty(tree, 1)
    result["node1_after"] = {"procs": tree.procs(1), "populated": tree.populated(1)}
    os.waitpid(helpers, 0)
    result["kill2"] = tree.kill(2).value
    os.waitpid(burner, 0)
    costs = move_costs(tree, 3, rounds, spacing) if tree.create(3) else {}
    result["move_us"] = {how: summary(values) for how, values in costs.items()}
    result["remove"] = [tree.remove(n) for n in (1, 2, 3)]
    result["problem"] = tree.problem
    (where / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
