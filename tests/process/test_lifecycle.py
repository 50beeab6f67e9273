"""Start, readiness, watchdog, stop, and the fences around a supervisor's death."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys

import yaml

from tests.process.harness import REPO, base_config, children, pid_alive, wait_for, zombies


def test_default_config_runs_four_healthy_nodes_with_ready_status_and_watchdog(swarm):
    config = yaml.safe_load((REPO / "etc" / "swarmd.yaml").read_text())
    s = swarm(config, watchdog_usec=400_000)
    s.wait_ready()
    s.wait_status("4/4 healthy")
    assert "READY" in s.notify.values("READY")[0] or s.notify.values("READY")[0] == "1"
    nodes = s.nodes()
    assert sorted(nodes) == [0, 1, 2, 3]
    assert all(n["health"] == "healthy" and n["state"] == "running" for n in nodes.values())
    # WATCHDOG=1 at half of WATCHDOG_USEC (0.2 s): collect a few seconds' worth.
    wait_for(lambda: len(s.notify.values("WATCHDOG")) >= 12, 10, "12 watchdog pings")
    times = [when for when, key, _ in s.notify.assignments() if key == "WATCHDOG"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # systemd kills at WATCHDOG_USEC without a ping; every gap must stay below it.
    assert max(gaps) < 0.4, gaps
    assert 0.1 < statistics.median(gaps) < 0.3, gaps


def test_nodes_never_hold_notify_socket_or_watchdog_variables(swarm):
    s = swarm(base_config(app="swarmd_testapps:fd_report"), watchdog_usec=2_000_000)
    s.wait_ready()
    out = s.wait_output("ENV ")
    env_line = next(line for line in out.splitlines() if "ENV " in line)
    assert "NOTIFY_SOCKET" not in env_line and "WATCHDOG" not in env_line
    assert "SWARMD_NODE_ID" in env_line and "SWARMD_NODE_GENERATION" in env_line
    # A Python node keeps Python's SIGPIPE (ignored: BrokenPipeError, not sudden death).
    assert "SIGPIPE <Handlers.SIG_IGN: 1>" in s.wait_output("SIGPIPE ")
    fd_line = next(line for line in out.splitlines() if "FDS " in line)
    targets = fd_line.split("FDS ", 1)[1].split()
    # stdin, stdout, stderr, its own health pipe; nothing of the supervisor's.
    assert not any("socket" in t for t in targets), targets
    assert not any("anon_inode:[pidfd]" in t or "eventpoll" in t for t in targets), targets
    pipes = [t for t in targets if "pipe:" in t]
    assert len(pipes) == 3, targets  # health write end, stdout, stderr


def test_term_stops_every_node_and_exits_zero(swarm):
    s = swarm(base_config(nodes=3))
    s.wait_ready()
    pids = [n["pid"] for n in s.nodes().values()]
    s.signal(signal.SIGTERM)
    s.notify.wait("STOPPING")
    assert s.wait_exit() == 0
    out = s.output()
    for node_id in range(3):
        assert f"steady node {node_id} stopping" in out  # each node saw its TERM
    assert not any(pid_alive(pid) for pid in pids)


def test_node_ignoring_term_is_killed_after_shutdown_timeout(swarm):
    s = swarm(base_config(app="swarmd_testapps:ignore_term", env={"TESTAPP_ONLY_NODE": "1"},
                          timeouts={"shutdown": "1s"}))
    s.wait_ready()
    stubborn = s.nodes()[1]["pid"]
    s.signal(signal.SIGTERM)
    assert s.wait_exit(timeout=20) == 0
    out = s.output()
    assert "node 1 did not exit within timeouts.shutdown (1s) after TERM: KILL" in out
    assert "node 1 killed by SIGKILL (stop)" in out
    assert not pid_alive(stubborn)


def test_sigkill_of_supervisor_takes_every_node_down_within_a_second(swarm):
    s = swarm(base_config(nodes=4))
    s.wait_ready()
    pids = [n["pid"] for n in s.nodes().values()]
    s.signal(signal.SIGKILL)
    s.wait_exit()
    # PR_SET_PDEATHSIG plus the parent check: allow scheduling slack on a loaded machine.
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), 3.0,
             f"orphaned nodes {pids} to exit")


def test_command_nodes_get_their_id_generation_and_health_fd(swarm, tmp_path):
    script = tmp_path / "worker.sh"
    script.write_text('#!/bin/sh\necho "cmd node $SWARMD_NODE_ID gen $SWARMD_NODE_GENERATION"\n'
                      'trap "exit 0" TERM\n'
                      'while true; do echo 0 >&"$SWARMD_HEALTH_FD"; sleep 0.2; done\n')
    script.chmod(0o755)
    config = base_config(command=[str(script)])
    del config["app"]
    s = swarm(config)
    s.wait_ready()
    s.wait_status("2/2 healthy")
    s.wait_output("cmd node 0 gen 0")
    s.wait_output("cmd node 1 gen 0")
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0


def test_invalid_config_exits_78_before_forking(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes: 0\ntimeouts:\n  report: soon\nbogus: 1\n")
    result = subprocess.run([sys.executable, "-m", "swarmd", "run", "-c", str(path)],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 78
    assert f"{path}:1: nodes: must be from 1 to" in result.stderr
    assert f"{path}:3: timeouts.report: expected a duration" in result.stderr
    assert f"{path}:4: bogus: unknown key" in result.stderr
    assert "started" not in result.stderr


def test_check_accepts_the_default_config():
    result = subprocess.run([sys.executable, "-m", "swarmd", "check", "-c",
                             str(REPO / "etc" / "swarmd.yaml")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "valid: 4 node(s)" in result.stdout


def test_no_zombie_and_no_leftover_child_after_stop(swarm):
    s = swarm(base_config(nodes=2))
    s.wait_ready()
    assert len(children(s.pid)) == 2
    assert zombies(s.pid) == []
    s.signal(signal.SIGINT)
    assert s.wait_exit() == 0
    assert not os.path.exists(s.runtime / "control.sock")


def test_ttin_makes_every_node_write_the_stacks_of_all_its_threads(swarm):
    s = swarm(base_config(nodes=2))
    s.wait_ready()
    s.signal(signal.SIGTTIN)
    wait_for(lambda: s.output().count("stacks of") >= 3, 10,
             "a stack dump from the supervisor and each node")
    out = s.output()
    assert "supervisor stacks of 1 thread(s) (SIGTTIN; 2 node(s) write theirs)" in out
    assert "in handle_ttin" in out  # the supervisor's loop, dispatching the signal
    nodes = out[out.index("swarmd-node[0]"):]
    assert 'Thread "MainThread"' in nodes and "in steady" in nodes  # where the app really is
    assert 'Thread "swarmd-parent-check"' in nodes
    # a node's stack starts at the app: nothing inherited from the supervisor's fork
    dumps = [chunk for chunk in out.split("stacks of") if "in steady" in chunk]
    assert dumps and all("in _supervise" not in d and "in spawn" not in d for d in dumps), out
    assert s.nodes()[0]["generation"] == 0  # nobody was harmed


def test_a_long_stop_extends_systemds_timeout_while_it_progresses(swarm):
    s = swarm(base_config(nodes=1, app="swarmd_testapps:ignore_term",
                          timeouts={"shutdown": "3s"}))
    s.wait_ready()
    s.signal(signal.SIGTERM)
    s.notify.wait("STOPPING")
    s.notify.wait("EXTEND_TIMEOUT_USEC", lambda v: int(v) > 0)
    assert s.wait_exit(timeout=20) == 0


def test_without_preload_a_reload_deploys_new_code(swarm, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    module = code / "deployed_app.py"
    template = ("VERSION = {v}\n"
                "def run(node):\n"
                "    node.log.info('running version %d', VERSION)\n"
                "    while not node.stopping.is_set() and not node.quieting.is_set():\n"
                "        node.healthy()\n"
                "        node.stopping.wait(0.2)\n")
    module.write_text(template.format(v=1))
    config = base_config(nodes=2, app="deployed_app:run", preload=False,
                         env={"PYTHONPATH": str(code)})
    s = swarm(config, env={"PYTHONPATH": os.pathsep.join([str(code), str(REPO)])})
    s.wait_ready()
    s.wait_output("running version 1")
    module.write_text(template.format(v=2))
    # Python trusts a cached .pyc whose source has the same size and mtime in whole seconds:
    # a deploy within the second of the first import, of a same-size file, would look unchanged.
    mtime = module.stat().st_mtime + 2
    os.utime(module, (mtime, mtime))
    readies = len(s.notify.values("READY"))
    s.signal(signal.SIGHUP)
    s.notify.wait("READY", after=readies)
    wait_for(lambda: s.output().count("running version 2") >= 2, 10, "both nodes on version 2")


def _blocked_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigBlk")


def test_a_signal_mask_swarmd_inherits_is_cleared_for_it_and_its_nodes(swarm):
    """Started with TERM blocked (a shell or tool may leave a mask): the supervisor and its
    nodes still run with no signal blocked, and TERM still stops them."""
    s = swarm(base_config(nodes=2), preexec=lambda: signal.pthread_sigmask(
        signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR2}))
    s.wait_ready()
    assert _blocked_signals(s.pid) == 0
    for node in s.nodes().values():
        assert _blocked_signals(node["pid"]) == 0, node
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0


def test_scale_adds_and_removes_slots_and_leaves_the_others_alone(swarm):
    s = swarm(base_config(nodes=2))
    s.wait_ready()
    before = {i: n["pid"] for i, n in s.nodes().items()}

    def scale(count: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swarmd", "scale", str(count),
                               "--runtime-dir", str(s.runtime)], capture_output=True, text=True,
                              timeout=30)

    done = scale(4)
    assert done.returncode == 0, done.stderr
    assert "scaled from 2 to 4 node(s); the config says 2" in done.stderr
    nodes = wait_for(lambda: (n := s.nodes()) and len(n) == 4 and all(
        x["health"] == "healthy" for x in n.values()) and n, 20, "4 healthy nodes")
    assert {i: nodes[i]["pid"] for i in (0, 1)} == before  # untouched
    status = subprocess.run([sys.executable, "-m", "swarmd", "status", "--runtime-dir",
                             str(s.runtime)], capture_output=True, text=True, timeout=30)
    assert "scaled to 4 node(s) by `swarmd scale`; the config says 2" in status.stdout
    s.wait_status("4/4 healthy")

    assert scale(1).returncode == 0
    wait_for(lambda: sorted(s.nodes()) == [0], 20, "slots 1-3 removed")
    assert s.nodes()[0]["pid"] == before[0]
    assert s.status()["restarts"] == 0  # a removal is not a failure
    out = s.output()
    assert "node 3 exited with status 0 (removed)" in out, out[-2000:]  # quieted, it left

    bad = scale(0)
    assert bad.returncode == 1 and "from 1 to 4096" in bad.stderr

    # the next deploy takes `nodes` from the file again
    reload = subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                             str(s.runtime)], capture_output=True, text=True, timeout=90)
    assert reload.returncode == 0, reload.stderr
    assert sorted(s.nodes()) == [0, 1]
