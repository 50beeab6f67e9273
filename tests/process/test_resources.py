"""Resources without a delegated cgroup (the foreground, this host's v1 controllers): nothing
outlives its node through the process-group and mark fallback, figures from /proc, titles,
recycles that are never failures. The cgroup paths are proven in tests/system/test_cgroups.py
and, for what this host's cgroups cannot show, on a fake tree in tests/unit/test_cgroups.py."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tests.process.harness import base_config, pid_alive, wait_for, zombies


def leftovers(directory: Path, node_id: int, generation: int) -> list[int]:
    """helper, exec'd daemon, Python daemon: the pids a leaver node wrote."""
    path = directory / f"pids-{node_id}-{generation}"
    text = wait_for(lambda: path.exists() and path.read_text(), 30, f"{path} written")
    return [int(pid) for pid in text.split()]


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode().strip()


def test_a_killed_nodes_helper_and_daemon_are_gone_before_its_replacement_reports(
        swarm, tmp_path):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:leaver",
                          env={"TESTAPP_DIR": str(tmp_path)}))
    s.wait_ready()
    helper, daemon, _ = leftovers(tmp_path, 0, 0)
    neighbours = leftovers(tmp_path, 1, 0)
    assert all(pid_alive(pid) for pid in (helper, daemon, *neighbours))
    os.kill(s.nodes()[0]["pid"], signal.SIGKILL)
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy",
                what="node 0 replaced")
    # the kills went out before the report was read; their delivery is the kernel's
    wait_for(lambda: not pid_alive(helper) and not pid_alive(daemon), 2,
             "node 0's helper and daemon gone")
    assert all(pid_alive(pid) for pid in neighbours), "node 1's were touched"


def test_a_stop_leaves_no_process_of_the_app(swarm, tmp_path):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:leaver",
                          env={"TESTAPP_DIR": str(tmp_path)}))
    s.wait_ready()
    pids = leftovers(tmp_path, 0, 0) + leftovers(tmp_path, 1, 0)
    nodes = [node["pid"] for node in s.nodes().values()]
    assert all(pid_alive(pid) for pid in pids)
    # The exec'd daemons tell their pid just before their exec: until it happened they are
    # Python forks without marks, which the stop would count with the two that never exec.
    for exec_daemon in (pids[1], pids[4]):
        wait_for(lambda p=exec_daemon: cmdline(p) == "sleep 1000", 10, f"{exec_daemon} exec'd")
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    alive = [pid for pid in pids + nodes if pid_alive(pid)]
    assert alive == [], f"left running: {alive}"
    # the Python daemons (no exec, no marks) were the supervisor's children until the end
    assert re.search(r"stopped \(SIGTERM received\), exit status 0; 2 process\(es\) the nodes "
                     r"left behind were killed", s.output()), s.output()[-2000:]


def test_status_shows_cpu_and_memory_from_proc_without_cgroups(swarm):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:ballast",
                          env={"TESTAPP_MB": "50", "TESTAPP_BURN": "1",
                               "TESTAPP_ONLY_NODE": "0"}))
    s.wait_ready()
    status = s.status()
    assert status["cgroups"] is False
    node = s.wait_node(0, lambda n: n["memory"] is not None and n["cpu"] is not None,
                       timeout=40, what="node 0's figures")
    assert node["memory_source"] == "pss"
    assert node["memory"] >= 50 << 20, node
    idle = s.wait_node(1, lambda n: n["memory"] is not None and n["cpu"] is not None,
                       timeout=40, what="node 1's figures")
    assert idle["memory"] < 40 << 20, idle  # node 1 holds no ballast: shares are not counted
    # node 0 burns all but its report's moment; node 1 sleeps between reports
    burning = s.wait_node(0, lambda n: n["cpu"] > 50, timeout=40, what="node 0 near a core")
    assert s.nodes()[1]["cpu"] < 20, (burning, s.nodes()[1])


def test_processes_carry_titles(swarm):
    # The config's env sets the supervisor's first environment variable again (same value):
    # the node's environ[0] is then a new string, which setproctitle's setup in a node could
    # not find argv from (titles were silently missing: it must be set up before the fork).
    first = next(k for k in os.environ if k not in ("JOURNAL_STREAM", "WATCHDOG_USEC",
                                                    "WATCHDOG_PID"))
    s = swarm(base_config(nodes=2, env={first: os.environ[first]}))
    s.wait_ready()
    assert cmdline(s.pid) == f"swarmd: supervisor {s.config_path}"
    for node in s.nodes().values():
        wanted = f"swarmd: node {node['id']} (gen {node['generation']}) swarmd_testapps:steady"
        # the title is set off the node's way to its first report: moments after it
        wait_for(lambda n=node, w=wanted: cmdline(n["pid"]) == w, 10,
                 f"node {node['id']}'s title {wanted!r}")


def test_a_clean_exit_after_reset_after_is_a_recycle_not_a_failure(swarm):
    """A worker that returns 0 after serving its share is replaced without a failure: no
    backoff, no give_up_after, no restart count."""
    s = swarm(base_config(nodes=1, app="swarmd_testapps:exit_code",
                          env={"TESTAPP_EXIT": "0", "TESTAPP_ONLY_GEN": "0",
                               "TESTAPP_LINGER": "1.5"},
                          restart={"reset_after": "1s", "give_up_after": 1,
                                   "delay": "10s", "max_delay": "10s"}))
    s.wait_ready()
    node = s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy",
                       timeout=20, what="node 0 recycled")
    assert node["restarts"] == 0, node
    assert s.status()["restarts"] == 0
    out = s.output()
    assert re.search(r"node 0 recycled: exited 0 by itself after \S+ \(restart\.reset_after "
                     r"1s\)", out), out[-2000:]
    assert "restarts in" not in out


def test_limits_memory_recycles_one_node_at_a_time(swarm):
    """Every node above limits.memory (PSS here): each recycled, the next only after the
    previous slot's new node reported, never counted as a restart; the new nodes, under the
    limit, stay."""
    s = swarm(base_config(nodes=3, app="swarmd_testapps:ballast",
                          env={"TESTAPP_MB": "40", "TESTAPP_ONLY_GEN": "0"},
                          limits={"memory": "30M"}))
    s.wait_ready()
    wait_for(lambda: all(n["generation"] == 1 and n["health"] == "healthy"
                         for n in s.nodes().values()), 90, "every node recycled once")
    out = s.output()
    away: set[str] = set()  # slots recycled whose new node has not reported yet
    recycled = []
    for line in out.splitlines():
        if m := re.search(r"node (\d) recycled: memory (\S+) above limits\.memory 30M", line):
            assert not away, f"node {m[1]} recycled while {away} had not reported:\n{out}"
            away.add(m[1])
            recycled.append(m[1])
        elif m := re.search(r"node (\d) reported healthy \(0\) first", line):
            away.discard(m[1])
    assert sorted(recycled) == ["0", "1", "2"], out[-3000:]
    assert s.status()["restarts"] == 0
    assert "restarts in" not in out and zombies(s.pid) == []
    # the new nodes hold nothing: watch them through two memory periods, none recycled again
    memory_read = s.wait_node(2, lambda n: n["generation"] == 1 and n["memory"] is not None,
                              timeout=40, what="node 2's new memory figure")
    assert memory_read["memory"] < 30 << 20
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        assert all(n["generation"] == 1 for n in s.nodes().values()), s.output()[-2000:]
        time.sleep(0.5)  # ok-sleep: watching that nothing happens
