"""The fault suite: what swarmd must survive, and proof that nothing else was lost."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from swarmd.node.process import NodeProcess
from tests.process.harness import (
    REPO,
    base_config,
    children,
    pid_alive,
    status_field,
    wait_for,
    zombies,
)


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    return status_field(pid, "VmRSS")


def _started_lines(output: str, node_id: int) -> int:
    return output.count(f"node {node_id} started (pid")


def test_crash_loop_is_bounded_and_neighbours_keep_running(swarm):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:crash", env={"TESTAPP_ONLY_NODE": "1"},
                          restart={"delay": "200ms", "max_delay": "400ms",
                                   "give_up_after": 6}))
    neighbour = s.wait_node(0, lambda n: n["health"] == "healthy", what="node 0 healthy")
    # While node 1 crash-loops, node 0 keeps its process and keeps reporting.
    wait_for(lambda: "failure 3 in a row" in s.output(), 20, "three failures of node 1")
    assert s.nodes()[0]["pid"] == neighbour["pid"]
    assert s.nodes()[0]["health"] == "healthy"
    assert s.wait_exit(timeout=30) == 1
    out = s.output()
    # Six starts in all (no fork storm): the first and five restarts, then it gives up.
    assert _started_lines(out, 1) == 6, out
    assert "node 1 failed 6 times in a row (restart.give_up_after): giving up" in out
    assert _started_lines(out, 0) == 1


@pytest.mark.parametrize("garbage, expected", [
    (r"b'hello\n'", "got b'hello'"),
    (r"b'-1\n'", "got b'-1'"),
    (r"b'256\n'", "got b'256'"),
    (r"b'99999999999999999999\n'", "got b'99999999999999999999'"),
    (r"b'\x00\x00\n'", r"got b'\x00\x00'"),
    (r"b'\xff\xfe\n'", r"got b'\xff\xfe'"),
    (r"b'7' * (1 << 20)", "a line longer than 16 bytes without newline"),
    (r"b''", "it closed the pipe"),
])
def test_bad_input_on_a_health_pipe_is_a_protocol_error_of_that_node_only(swarm, garbage,
                                                                          expected):
    env = {"TESTAPP_ONLY_NODE": "0", "TESTAPP_GARBAGE": garbage}
    if garbage == "b''":
        env["TESTAPP_CLOSE_PIPE"] = "1"
    s = swarm(base_config(nodes=2, app="swarmd_testapps:garbage", env=env))
    s.wait_ready()
    other = s.nodes()[1]
    s.wait_output("node 0 broke the health protocol")
    errors = [line for line in s.output().splitlines() if "broke the health protocol" in line]
    assert any(expected in line for line in errors), errors
    assert all("node 0 " in line for line in errors), errors
    # The other node is untouched and still read; the supervisor still answers.
    reports = s.nodes()[1]
    assert reports["pid"] == other["pid"] and reports["health"] == "healthy"
    assert s.status()["ok"]
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0


def test_a_flooding_node_neither_starves_the_watchdog_nor_the_other_nodes(swarm):
    s = swarm(base_config(nodes=3, app="swarmd_testapps:flood", env={"TESTAPP_ONLY_NODE": "0"},
                          timeouts={"report": "1s"}),
              watchdog_usec=1_000_000)
    s.wait_ready()
    start = len(s.notify.values("WATCHDOG"))
    wait_for(lambda: len(s.notify.values("WATCHDOG")) >= start + 12, 15, "12 watchdog pings")
    times = [when for when, key, _ in s.notify.assignments() if key == "WATCHDOG"][start:]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 0.5 + 0.05, gaps
    # Six seconds of flood with a 1 s report timeout: had the others not been read, they
    # would have been declared hung and replaced.
    nodes = s.nodes()
    assert all(nodes[i]["generation"] == 0 for i in (1, 2)), nodes
    assert "hung" not in s.output()


def test_a_flooding_node_is_read_in_pauses_yet_its_failure_is_acted_on(swarm):
    """A node calling healthy() in a tight loop is read a full pipe at a time (the supervisor's
    CPU is measured in bench/), is never taken for hung, and its later code 1 still restarts
    it."""
    s = swarm(base_config(nodes=2, app="swarmd_testapps:flood_then_fail",
                          env={"TESTAPP_ONLY_NODE": "0", "TESTAPP_ONLY_GEN": "0",
                               "TESTAPP_FLOOD_SECONDS": "3"},
                          timeouts={"report": "1s"}))
    s.wait_ready()
    s.wait_output("flood over, reporting 1", timeout=30)
    s.wait_node(0, lambda n: n["generation"] == 1 and n["code"] == 0, 15,
                "node 0 restarted after its code 1")
    out = s.output()
    assert "hung" not in out
    assert "node 0: healthy (0) -> unhealthy (1): restart" in out
    assert s.nodes()[1]["generation"] == 0


def test_500_restarts_leave_fds_and_memory_where_they_were(swarm):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:exit_code",
                          env={"TESTAPP_ONLY_NODE": "0", "TESTAPP_EXIT": "0"},
                          restart={"delay": 0, "give_up_after": 0}))
    s.wait_node(0, lambda n: n["restarts"] >= 50, 60, "50 restarts (warm-up)")
    fds, rss = _fd_count(s.pid), _rss_kb(s.pid)
    s.wait_node(0, lambda n: n["restarts"] >= 550, 180, "500 more restarts")
    # Either count may catch a node on its way in or out (a few fds for a moment): a leak of
    # one a restart would be 500 more, and would never come back down.
    wait_for(lambda: _fd_count(s.pid) <= fds + 3, 10, f"fds back near {fds}")
    assert _rss_kb(s.pid) <= rss + 2048, (rss, _rss_kb(s.pid))
    # Nodes die all the time here: a zombie may exist for an instant, but none may stay.
    seen = set(zombies(s.pid))
    wait_for(lambda: not seen & set(zombies(s.pid)), 5, f"zombies {seen} to be reaped")
    assert len(children(s.pid)) <= 3


def test_a_reused_pid_is_never_signalled():
    """A NodeProcess signals through its pidfd: once its process is gone, a newcomer that got
    the same pid number is out of reach."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    pidfd = os.pidfd_open(pid)
    os.waitpid(pid, 0)  # reaped: from now on the number may be reused by anyone
    newcomer = subprocess.Popen(["sleep", "30"])
    try:
        # Stand-in for the kernel handing the dead node's pid to the newcomer.
        proc = NodeProcess(7, 0, newcomer.pid, pidfd, os.open(os.devnull, os.O_RDONLY),
                           os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_RDONLY),
                           time.monotonic(), is_command=False)
        assert proc.send(signal.SIGTERM) is False
        proc.terminate("stop", time.monotonic())
        proc.kill()
        assert newcomer.poll() is None and pid_alive(newcomer.pid)
    finally:
        newcomer.kill()
        newcomer.wait()


def test_a_frozen_node_is_replaced_and_never_blocks_stop(swarm):
    s = swarm(base_config(nodes=2, timeouts={"report": "1s", "shutdown": "2s"}))
    s.wait_ready()
    frozen = s.nodes()[0]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy", timeout=20,
                what="the frozen node replaced")
    assert not pid_alive(frozen)  # TERM then CONT: a stopped process still gets its TERM
    again = s.nodes()[1]["pid"]
    os.kill(again, signal.SIGSTOP)
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait_exit(timeout=20) == 0
    assert time.monotonic() - started < 2 + 5  # bounded by timeouts.shutdown, not by the node
    assert not pid_alive(again)


def test_a_frozen_node_never_blocks_a_reload_beyond_drain_and_shutdown(swarm):
    s = swarm(base_config(nodes=2, timeouts={"drain": "1s", "shutdown": "1s", "report": "30s"}))
    s.wait_ready()
    frozen = s.nodes()[0]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    result = subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                             str(s.runtime)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(n["generation"] == 1 for n in s.nodes().values())
    assert not pid_alive(frozen)


def test_a_world_writable_config_is_refused(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text("nodes: 1\n")
    path.chmod(0o666)
    result = subprocess.run([sys.executable, "-m", "swarmd", "run", "-c", str(path)],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 78
    assert "writable by every user" in result.stderr and "chmod o-w" in result.stderr


_PROBE = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused by the file mode")
    sys.exit()
try:
    s.sendall(json.dumps({"command": sys.argv[2]}).encode() + b"\\n")
except (BrokenPipeError, ConnectionResetError):
    pass  # refused: the server already answered and closed; its answer is still readable
print(json.loads(s.makefile().readline()).get("error") or "answered")
"""


def test_other_users_read_status_and_change_nothing(swarm):
    # A runtime directory every user may traverse: only the sockets and the server may say no.
    runtime = Path(tempfile.mkdtemp(prefix="swarmd-access-", dir="/tmp"))
    os.chmod(runtime, 0o755)
    try:
        s = swarm(base_config(nodes=1), runtime=runtime / "run")
        s.wait_ready()
        path = s.runtime / "control.sock"
        assert path.stat().st_mode & 0o777 == 0o600
        assert (s.runtime / "status.sock").stat().st_mode & 0o777 == 0o666
        os.chmod(s.runtime, 0o755)
        nobody = pwd.getpwnam("nobody")

        def drop() -> None:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

        def probe(command: str, as_nobody: bool, at: Path = path) -> str:
            result = subprocess.run(["/usr/bin/python3", "-c", _PROBE, str(at), command],
                                    capture_output=True, text=True, timeout=30,
                                    preexec_fn=drop if as_nobody else None)
            return result.stdout.strip() or result.stderr

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "swarmd", *args, "--runtime-dir",
                                   str(s.runtime)], capture_output=True, text=True,
                                  timeout=30, preexec_fn=drop, cwd="/")

        assert probe("status", as_nobody=False) == "answered"  # the probe itself works
        assert probe("status", as_nobody=True) == "refused by the file mode"
        # `swarmd status` finds the read-only socket; a change is refused with the reason.
        table = cli("status")
        assert table.returncode == 0, table.stderr
        assert table.stdout.startswith(f"swarmd (pid {s.proc.pid}): 1/1 healthy")
        assert json.loads(cli("status", "--json").stdout)["nodes"][0]["id"] == 0
        quiet = cli("quiet")
        assert quiet.returncode == 1
        assert "permission denied" in quiet.stderr and "only root" in quiet.stderr
        # status.sock answers status only, whoever asks (root included).
        status_path = s.runtime / "status.sock"
        assert probe("quiet", False, at=status_path).startswith("permission denied")
        assert probe("status", False, at=status_path) == "answered"
        # With control.sock opened up by an operator, the peer's uid is still checked
        # (SO_PEERCRED): status is read-only and answered, a change is refused.
        os.chmod(path, 0o666)
        assert probe("status", as_nobody=True) == "answered"
        assert probe("quiet", as_nobody=True).startswith("permission denied: only root")
        # A runtime directory closed to others (RuntimeDirectoryMode=0700): a clear line.
        os.chmod(s.runtime, 0o700)
        closed = cli("status")
        assert closed.returncode == 4  # LSB: insufficient privilege
        assert "RuntimeDirectoryMode" in closed.stderr, closed.stderr
        assert s.status()["mode"] == "running"
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_nodes_hold_none_of_the_supervisors_fds(swarm):
    s = swarm(base_config(nodes=3, app="swarmd_testapps:fd_report"))
    s.wait_ready()
    out = s.wait_output("FDS ")
    wait_for(lambda: s.output().count("FDS ") >= 3, 10, "three fd reports")
    supervisor = {os.readlink(f"/proc/{s.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{s.pid}/fd")}
    for line in s.output().splitlines():
        if "FDS " not in line:
            continue
        # fd=target pairs; a target may hold spaces ("/memfd:... (deleted)")
        targets = {t for _, t in re.findall(r"(\d+)=(.+?)(?= \d+=|$)",
                                            line.split("FDS ", 1)[1])}
        shared = {t for t in targets & supervisor
                  if t.startswith(("pipe:", "socket:", "anon", "/memfd:"))}
        # Its own health, stdout and stderr pipes (the supervisor holds their read ends),
        # nothing of other nodes, no socket, no pidfd, no epoll, not the heartbeat table's fd
        # (a node keeps only its mapping of it).
        assert len(shared) == 3, (line, shared)
        assert not any(t.startswith("socket:") for t in targets), line
    assert out



def _oom_score_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as handle:
        return int(handle.read())


def test_nodes_are_likelier_oom_victims_than_their_supervisor(swarm):
    """App nodes raise their score right after their first report, command nodes before the
    exec: every node ends up at the supervisor's + 300."""
    s = swarm(base_config(nodes=1))
    s.wait_ready()
    want = min(1000, _oom_score_adj(s.pid) + 300)
    pid = s.nodes()[0]["pid"]
    wait_for(lambda: _oom_score_adj(pid) == want, 5.0, f"node {pid} at oom_score_adj {want}")


def test_command_nodes_are_likelier_oom_victims_too(swarm, tmp_path):
    script = tmp_path / "worker.sh"
    script.write_text('#!/bin/sh\ntrap "exit 0" TERM\n'
                      'while true; do echo 0 >&"$SWARMD_HEALTH_FD"; sleep 0.2; done\n')
    script.chmod(0o755)
    config = base_config(nodes=1, command=[str(script)])
    del config["app"]
    s = swarm(config)
    s.wait_ready()
    assert _oom_score_adj(s.nodes()[0]["pid"]) == min(1000, _oom_score_adj(s.pid) + 300)


def test_the_supervisor_lifts_its_fd_limit_and_nodes_get_the_original_back(swarm):
    import resource

    original = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = 256, original[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # inherited by the supervisor
    try:
        s = swarm(base_config(nodes=1))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, original)

    def limits(pid: int) -> tuple[str, str]:
        with open(f"/proc/{pid}/limits") as handle:
            line = next(x for x in handle if x.startswith("Max open files"))
        return tuple(line.split()[3:5])

    s.wait_ready()
    assert limits(s.pid) == (str(hard), str(hard))
    assert limits(s.nodes()[0]["pid"]) == (str(soft), str(hard))
