"""Quiet (TSTP) and reload (HUP, `swarmd reload`): rolling replacement slot by slot."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from tests.process.harness import base_config


def _cli(s, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmd", *args, "--runtime-dir",
                           str(s.runtime)], capture_output=True, text=True, timeout=60)


def test_tstp_quiets_every_node_and_nothing_is_restarted(swarm):
    s = swarm(base_config(nodes=3))
    s.wait_ready()
    s.signal(signal.SIGTSTP)
    s.wait_status("quiet")
    for node_id in range(3):
        s.wait_output(f"node {node_id} exited with status 0")  # steady leaves on quiet
    s.wait_status("0/3 healthy")
    nodes = s.nodes()
    assert all(n["pid"] is None and n["state"] == "quiet" for n in nodes.values()), nodes
    assert "restarts in" not in s.output()


def test_quiet_command_reaches_the_running_supervisor(swarm):
    s = swarm(base_config(nodes=2, env={"TESTAPP_STAY_ON_QUIET": "1"}))
    s.wait_ready()
    result = _cli(s, "quiet")
    assert result.returncode == 0, result.stderr
    s.wait_status("quiet")
    s.wait_output("quiet: TSTP to 2 node(s)")


def test_hup_replaces_every_slot_one_at_a_time_between_reloading_and_ready(swarm):
    s = swarm(base_config(nodes=3))
    s.wait_ready()
    before = {i: n["pid"] for i, n in s.nodes().items()}
    readies = len(s.notify.values("READY"))
    s.signal(signal.SIGHUP)
    s.notify.wait("READY", after=readies, timeout=60)
    nodes = s.nodes()
    assert all(nodes[i]["generation"] == 1 and nodes[i]["pid"] != before[i] for i in nodes)
    keys = [key for _, key, _ in s.notify.assignments()]
    reloading = keys.index("RELOADING")
    assert "MONOTONIC_USEC" in keys[reloading:reloading + 2]
    assert reloading < len(keys) - 1 - keys[::-1].index("READY")
    # Never more than one slot down: slot k+1 is quieted only after slot k's new node
    # reported its first health.
    out = s.output()
    lines = out.splitlines()

    def index(pattern: str, start: int = 0) -> int:
        return next(i for i, line in enumerate(lines) if i >= start and re.search(pattern, line))

    for k in range(2):
        new_start = index(rf"node {k} started \(pid \d+, generation 1\)")
        new_up = index(rf"node {k} reported healthy \(0\) first", new_start)
        assert new_up < index(rf"node {k + 1} exited with status 0 \(reload\)")
    assert "reloaded: 3 node(s) replaced" in out


def test_reload_command_blocks_until_done_and_applies_new_config(swarm):
    s = swarm(base_config(nodes=2))
    s.wait_ready()
    s.write_config(base_config(nodes=3, env={"NEW_SETTING": "1"}))
    result = _cli(s, "reload")
    assert result.returncode == 0, result.stderr
    assert "reloaded" in result.stderr
    nodes = s.nodes()  # done means done: the new node count is there already
    assert sorted(nodes) == [0, 1, 2]
    assert all(n["health"] == "healthy" for n in nodes.values()), nodes
    s.wait_status("3/3 healthy")


def test_reload_with_invalid_config_keeps_old_one_and_fails(swarm):
    s = swarm(base_config(nodes=2))
    s.wait_ready()
    pids = {i: n["pid"] for i, n in s.nodes().items()}
    s.write_config({"nodes": "many"})
    result = _cli(s, "reload")
    assert result.returncode == 1
    assert "new config rejected" in result.stderr and "nodes:" in result.stderr
    assert {i: n["pid"] for i, n in s.nodes().items()} == pids
    readies = s.notify.values("READY")
    assert len(readies) == 2  # the first start and the end of the failed reload


def test_reload_rolls_back_at_a_new_node_that_cannot_boot(swarm):
    s = swarm(base_config(nodes=3))
    s.wait_ready()
    s.write_config(base_config(nodes=3, app="swarmd_testapps:crash",
                               env={"TESTAPP_ONLY_NODE": "1"},
                               restart={"delay": "5s", "max_delay": "5s"}))
    old2 = s.nodes()[2]["pid"]
    result = _cli(s, "reload")
    assert result.returncode == 1
    assert "slot 1: the new node exited with status 1 before its first report" in result.stderr
    nodes = s.nodes()
    assert nodes[0]["generation"] == 2  # replaced before the failure, then put back
    assert nodes[1]["generation"] == 2 and nodes[1]["health"] == "healthy"
    assert nodes[2]["pid"] == old2  # never touched
    assert "restarts in" not in s.output()  # the old version is back, nothing to restart


def test_status_command_lists_every_node(swarm):
    s = swarm(base_config(nodes=2))
    s.wait_ready()
    result = _cli(s, "status")
    assert result.returncode == 0, result.stderr
    assert "2/2 healthy" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "1"]
    assert all(row[2] == "running" and row[3:5] == ["0", "healthy"] for row in rows), rows
