"""Healthy nodes beat in shared memory instead of writing to their pipes: the supervisor at rest
is not woken per report, yet it counts every report, sees every node fresh and still finds the
hung one; through every way a node is forked (the first start's loader, a restart, a deploy's
candidate) and across the supervisor's re-exec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.process.harness import Swarm, base_config, status_field, wait_for
from tests.process.test_metrics import scrape, value

PERIOD = "0.02"  # 50 reports a second per node
NODES = 4


def wakeups(pid: int) -> int:
    return status_field(pid, "voluntary_ctxt_switches")


def reports(s: Swarm) -> float:
    text = scrape(s)
    return sum(value(text, f'swarmd_node_reports_total{{node="{i}"}}') or 0.0
               for i in range(NODES))


def watch_at_rest(s: Swarm, seconds: float = 3.0) -> tuple[float, int]:
    """(reports counted, supervisor wake-ups) over `seconds` of a fleet at rest, left alone
    meanwhile; then every node must be running and fresh."""
    counted = reports(s)
    woken = wakeups(s.pid)
    time.sleep(seconds)  # ok-sleep: the window measured, nothing of ours wakes it
    woken = wakeups(s.pid) - woken
    counted = reports(s) - counted
    print(f"{counted:.0f} reports counted, {woken} supervisor wake-ups in {seconds:g} s")
    assert all(n["state"] == "running" and n["report_age"] < 1.0
               for n in s.nodes().values()), s.nodes()
    return counted, woken


def config() -> dict[str, object]:
    return base_config(nodes=NODES, metrics={"listen": "127.0.0.1:0"},
                       timeouts={"report": "2s"})


def test_healthy_nodes_are_counted_without_waking_the_supervisor(swarm):
    s = swarm(config(), env={"TESTAPP_PERIOD": PERIOD})
    s.wait_ready()
    first = s.nodes()[0]["pid"]
    os.kill(first, signal.SIGKILL)  # its replacement is forked by the supervisor itself
    s.wait_node(0, lambda n: n["generation"] == 1 and n["state"] == "running", timeout=20,
                what="node 0 replaced")
    counted, woken = watch_at_rest(s)
    # ~600 reports in 3 s (at least a third of them on a loaded machine): every one counted,
    # while the supervisor was woken for its timers and our requests only.
    assert counted >= 200, counted
    assert woken < counted / 10, (woken, counted)
    # Beats are trusted only while they come: a frozen node is still hung in time.
    frozen = s.nodes()[2]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    s.wait_node(2, lambda n: n["generation"] == 1, timeout=20, what="the frozen node replaced")
    assert s.nodes()[1]["generation"] == 0


def test_nodes_of_a_deploy_beat_into_the_re_executed_supervisor(swarm):
    s = swarm(config(), env={"TESTAPP_PERIOD": PERIOD})
    s.wait_ready()
    supervisor = s.pid
    result = subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                             str(s.runtime)], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert s.status()["pid"] == supervisor
    wait_for(lambda: all(n["generation"] == 1 for n in s.nodes().values()), 10, "deployed")
    # The candidate forked them with the table; the new image of the supervisor reads it:
    # past timeouts.report (2 s) nobody is hung, every report counted, nobody woke it.
    counted, woken = watch_at_rest(s)
    assert counted >= 200, counted
    assert woken < counted / 10, (woken, counted)
    assert all(n["generation"] == 1 for n in s.nodes().values()), s.nodes()
