"""What no node, signal or stall can do to the supervisor: the loop's side of the hardening."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import yaml

from tests.process.harness import (
    APPS,
    REPO,
    NotifySocket,
    base_config,
    children,
    pid_alive,
    wait_for,
    zombies,
)


def test_a_stalled_loop_is_not_a_hung_fleet(swarm):
    """Stopped longer than timeouts.report, the supervisor reads the reports that waited in
    the pipes before it judges anyone hung."""
    s = swarm(base_config(nodes=4, timeouts={"report": "2s"}))
    s.wait_ready()
    pids = {i: n["pid"] for i, n in s.nodes().items()}
    s.signal(signal.SIGSTOP)
    time.sleep(3.0)  # ok-sleep: the stall is what is tested
    s.signal(signal.SIGCONT)
    settle = time.monotonic() + 1.5
    while time.monotonic() < settle:
        assert {i: n["pid"] for i, n in s.nodes().items()} == pids
        time.sleep(0.1)  # ok-sleep: watching that nothing is replaced
    assert "hung" not in s.output()


def test_a_booting_node_with_its_own_term_handler_dies_with_the_supervisor(swarm):
    s = swarm(base_config(nodes=1, app="swarmd_testapps:booting_deaf",
                          timeouts={"boot": "60s"}))
    s.wait_output("deaf node 0 booting")
    node = s.nodes()[0]["pid"]
    s.signal(signal.SIGKILL)
    s.wait_exit()
    wait_for(lambda: not pid_alive(node), 2, "the booting node gone with its supervisor")


def test_started_with_sigchld_ignored_exits_are_still_told_right(swarm):
    s = swarm(base_config(nodes=1),
              preexec=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
    s.wait_ready()
    os.kill(s.nodes()[0]["pid"], signal.SIGKILL)
    s.wait_output("node 0 killed by SIGKILL")
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy")


def test_orphans_of_nodes_are_reaped(swarm):
    """A node's double-forked helpers end up the supervisor's children (it is a subreaper):
    each is reaped, none stays a zombie."""
    s = swarm(base_config(nodes=2, app="swarmd_testapps:daemonizer",
                          env={"TESTAPP_DAEMONS": "10"}))
    s.wait_ready()
    wait_for(lambda: len(children(s.pid)) <= 2 and not zombies(s.pid), 10,
             "every helper ended and reaped")


def test_as_pid_1_of_a_container_it_reaps_every_orphan_and_stops_on_term(tmp_path):
    """`unshare --pid --fork --mount-proc`, as Docker, Kubernetes or Nomad start a process:
    orphans of the whole namespace come to swarmd, which reaps them; TERM stops the fleet; the
    log is readable on stderr."""
    config = tmp_path / "swarmd.yaml"
    config.write_text(yaml.safe_dump(base_config(nodes=2, app="swarmd_testapps:daemonizer",
                                                 env={"TESTAPP_DAEMONS": "20"})))
    notify = NotifySocket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "RUNTIME_DIRECTORY": str(tmp_path / "r"),
           "PYTHONPATH": os.pathsep.join([str(APPS), str(REPO)])}
    env.pop("JOURNAL_STREAM", None)
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                                  "-m", "swarmd", "run", "-c", str(config)],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        notify.wait("READY", timeout=30)
        supervisor = wait_for(lambda: children(outer.pid), 5, "swarmd under unshare")[0]
        with open(f"/proc/{supervisor}/status") as handle:
            assert "NSpid:" in (ns := next(x for x in handle if x.startswith("NSpid:")))
        assert ns.split()[-1] == "1", ns  # PID 1 of its namespace
        wait_for(lambda: len(children(supervisor)) == 2 and not zombies(supervisor), 10,
                 "40 orphans reaped by PID 1")
        os.kill(supervisor, signal.SIGTERM)
        assert outer.wait(timeout=30) == 0
        text = log.read_text()
        assert "stopping: SIGTERM received" in text and "swarmd notice: stopped" in text
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
        notify.close()


def test_a_flooding_node_is_limited_and_what_it_dropped_is_told(swarm, tmp_path):
    """Its lines beyond output.rate/burst are dropped and counted in node.output_dropped
    entries; the supervisor's own entries (another node's death meanwhile) all get through."""
    count_file = tmp_path / "printed"
    s = swarm(base_config(nodes=2, app="swarmd_testapps:print_flood",
                          env={"TESTAPP_ONLY_NODE": "0", "TESTAPP_FLOOD_SECONDS": "2",
                               "TESTAPP_COUNT_FILE": str(count_file)},
                          output={"rate": "100/s", "burst": 200}))
    s.wait_ready()
    os.kill(s.nodes()[1]["pid"], signal.SIGKILL)
    wait_for(count_file.exists, 30, "the flood over")
    printed = int(count_file.read_text())
    pattern = re.compile(r"node 0 wrote faster than its output limit \(output\.rate 100/s, "
                         r"output\.burst 200\): (\d+) line\(s\) of its output dropped over")

    def accounted() -> tuple[int, int] | None:
        out = s.output()
        forwarded = out.count("swarmd-node[0] ")  # its flood, and its log line after it
        dropped = sum(int(n) for n in pattern.findall(out))
        return (forwarded, dropped) if forwarded + dropped == printed + 1 else None

    # every line is either in the log or counted as dropped (a report at most every 10 s)
    forwarded, dropped = wait_for(accounted, 30, "every printed line forwarded or counted")
    assert dropped > forwarded > 0, (forwarded, dropped, printed)
    out = s.output()
    assert "node 1 killed by SIGKILL" in out and "node 1 started (pid" in out
    assert out.count("node 1 started (pid") == 2
