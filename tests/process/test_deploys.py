"""Deploys (reload): new code in every node and in the supervisor, same PID, all or nothing;
a broken version is rejected or rolled back with the fleet whole on the old one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.process.deploying import DeployedApp
from tests.process.harness import REPO, Swarm, Watch, children, pid_alive, wait_for, watchdog_gaps

WATCHDOG_USEC = 1_000_000


def _reload(s: Swarm, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                           str(s.runtime)], capture_output=True, text=True, timeout=timeout)


def _pids(s: Swarm) -> dict[int, int]:
    return {i: n["pid"] for i, n in s.nodes().items()}


def _healthy_counts(messages: list[tuple[float, str, str]]) -> list[int]:
    return [int(v.split("/")[0]) for _, k, v in messages if k == "STATUS"]


@pytest.mark.parametrize("preload", [True, False])
def test_a_deploy_puts_the_new_code_in_every_node_same_supervisor_pid(swarm, tmp_path,
                                                                     preload):
    app = DeployedApp(tmp_path)
    app.write(1)
    s = swarm(app.config(nodes=3, preload=preload), env=app.env(), watchdog_usec=WATCHDOG_USEC)
    s.wait_ready()
    wait_for(lambda: set(app.versions(s).values()) == {1}, 10, "every node on version 1")
    supervisor = s.pid
    sockets = {name: (s.runtime / name).stat().st_ino for name in ("control.sock", "status.sock")}
    app.write(2)
    watch = Watch(s)
    result = _reload(s)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "reloaded: 3 node(s) replaced"
    messages = watch.stop()
    # Done means done: every node runs version 2, forked by the same supervisor.
    assert app.versions(s) == {0: 2, 1: 2, 2: 2}
    status = s.status()
    assert status["pid"] == supervisor and s.proc.poll() is None
    # Both sockets crossed the exec: the same files, still listened on.
    assert {name: (s.runtime / name).stat().st_ino for name in sockets} == sockets
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(s.runtime / "status.sock"))
        sock.sendall(b'{"command": "status"}\n')
        assert json.loads(sock.makefile().readline())["pid"] == supervisor
    assert set(children(supervisor)) >= set(_pids(s).values())
    assert status["deploy"]["result"] == "deployed"
    # Never more than one slot short, and the watchdog on time across the re-exec.
    healthy = _healthy_counts(messages)
    assert healthy and min(healthy) >= 2, healthy
    assert [k for _, k, _ in messages if k in ("RELOADING", "READY")] == ["RELOADING", "READY"]
    gaps = watchdog_gaps(messages)
    assert gaps and max(gaps) < WATCHDOG_USEC / 1e6, gaps
    # A later restart (forked by the re-executed supervisor itself) runs version 2 too.
    os.kill(_pids(s)[1], signal.SIGKILL)
    wait_for(lambda: app.versions(s).get(1) == 2, 10, "node 1 restarted on version 2")


def test_the_supervisor_itself_runs_the_new_swarmd_code(swarm, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(REPO / "swarmd", package / "swarmd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = package / "swarmd" / "__init__.py"
    env = {"PYTHONPATH": os.pathsep.join([str(package), str(REPO / "tests" / "apps"),
                                          str(REPO)])}
    s = swarm(_config(nodes=2), env=env)
    s.wait_ready()
    before = s.status()
    text = init.read_text()
    assert f'__version__ = "{before["version"]}"' in text
    init.write_text(text.replace(before["version"], before["version"] + "+deployed"))
    mtime = init.stat().st_mtime + 2
    os.utime(init, (mtime, mtime))
    result = _reload(s)
    assert result.returncode == 0, result.stderr
    after = s.status()  # answered by the supervisor that runs the new code
    assert after["version"] == before["version"] + "+deployed"
    assert after["pid"] == before["pid"] == s.pid
    out = s.output()
    assert f"starting 2 node(s) from {s.config_path} (swarmd {before['version']})" in out


def _config(**overrides: Any) -> dict[str, Any]:
    from tests.process.harness import base_config

    return base_config(**overrides)


BROKEN_IMPORTS = {
    "import error": ("import no_such_module_anywhere", "ModuleNotFoundError"),
    "sys.exit at import": ("import sys\nsys.exit(3)", "called sys.exit(3)"),
    "argparse at import": ("import argparse\nargparse.ArgumentParser().parse_args(['--bogus'])",
                           "called sys.exit(2)"),
    "exception at import": ("raise KeyError('surprise')", "KeyError"),
    "hang at import": ("import time\ntime.sleep(3600)", "did not finish within timeouts.boot"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_IMPORTS))
@pytest.mark.parametrize("preload", [True, False])
def test_a_version_that_cannot_be_imported_is_rejected_and_nothing_is_touched(
        swarm, tmp_path, case, preload):
    at_import, reason = BROKEN_IMPORTS[case]
    app = DeployedApp(tmp_path)
    app.write(1)
    s = swarm(app.config(nodes=2, preload=preload, timeouts={"boot": "3s"}), env=app.env(),
              watchdog_usec=WATCHDOG_USEC)
    s.wait_ready()
    pids = _pids(s)
    app.write(2, at_import=at_import)
    watch = Watch(s)
    result = _reload(s)
    messages = watch.stop()
    assert result.returncode == 1
    assert "deploy rejected: every node keeps running the old version" in result.stderr
    assert reason in result.stderr, result.stderr
    assert _pids(s) == pids and app.versions(s) == {0: 1, 1: 1}
    assert s.status()["deploy"]["result"] == "rejected"
    # READY=1 ends the RELOADING=1, and the loop kept the watchdog's rhythm meanwhile
    assert [k for _, k, _ in messages if k in ("RELOADING", "READY")] == ["RELOADING", "READY"]
    gaps = watchdog_gaps(messages)
    assert gaps and max(gaps) < WATCHDOG_USEC / 1e6, gaps


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nnodes: 2\n"


BROKEN_CONFIGS = {
    "fifo": None,
    "alias bomb": _alias_bomb(),
    "nesting": "nodes: " + "[" * 3000 + "]" * 3000 + "\n",
    "invalid": "nodes: many\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_a_config_that_cannot_be_read_is_rejected_and_the_loop_stays_on_time(swarm, case):
    s = swarm(_config(nodes=2, timeouts={"boot": "3s"}), watchdog_usec=WATCHDOG_USEC)
    s.wait_ready()
    pids = _pids(s)
    if BROKEN_CONFIGS[case] is None:
        s.config_path.unlink()
        os.mkfifo(s.config_path, 0o644)
    else:
        s.config_path.write_text(BROKEN_CONFIGS[case])
    watch = Watch(s)
    result = _reload(s)
    messages = watch.stop()
    assert result.returncode == 1, result.stderr
    assert "rejected" in result.stderr and "keep" in result.stderr, result.stderr
    assert _pids(s) == pids
    assert s.status()["deploy"]["result"] == "rejected"
    gaps = watchdog_gaps(messages)
    assert gaps and max(gaps) < WATCHDOG_USEC / 1e6, gaps


def test_a_new_node_that_fails_rolls_every_slot_back_to_the_old_version(swarm, tmp_path):
    app = DeployedApp(tmp_path)
    app.write(1)
    s = swarm(app.config(nodes=3, restart={"delay": "200ms"}), env=app.env())
    s.wait_ready()
    wait_for(lambda: set(app.versions(s).values()) == {1}, 10, "every node on version 1")
    # Version 2 runs in slot 0, then crashes in slot 1 before its first report.
    app.write(2, in_run="if node.id == 1:\n    raise RuntimeError('v2 is broken')")
    result = _reload(s)
    assert result.returncode == 1
    assert re.search(r"deploy rolled back: slot 1: the new node exited with status 1 before "
                     r"its first report; every slot runs the old version again",
                     result.stderr), result.stderr
    # Done means done: the fleet is whole, every slot on version 1 (slot 0 was put back).
    assert app.versions(s) == {0: 1, 1: 1, 2: 1}
    assert all(n["health"] == "healthy" for n in s.nodes().values())
    deploy = s.status()["deploy"]
    assert deploy["result"] == "rolled back" and deploy["reason"].startswith("slot 1:")
    assert "swarmd err: deploy rolled back" in s.output()
    # Nothing crash-loops on version 2: watched for a while, no node restarts.
    pids = _pids(s)
    stable_until = time.monotonic() + 2.0
    while time.monotonic() < stable_until:
        assert _pids(s) == pids
        time.sleep(0.1)  # ok-sleep: watching that nothing changes
    assert "restarts in" not in s.output()
    # And the status table says how the last deploy went.
    table = subprocess.run([sys.executable, "-m", "swarmd", "status", "--runtime-dir",
                            str(s.runtime)], capture_output=True, text=True, timeout=30)
    assert "last deploy: rolled back: slot 1:" in table.stdout


def test_a_new_node_that_never_reports_is_rolled_back_after_timeouts_boot(swarm, tmp_path):
    app = DeployedApp(tmp_path)
    app.write(1)
    s = swarm(app.config(nodes=2, timeouts={"boot": "2s"}), env=app.env())
    s.wait_ready()
    app.write(2, in_run="import time\ntime.sleep(3600)")
    result = _reload(s)
    assert result.returncode == 1
    # (it sleeps through the TERM: KILL after timeouts.shutdown)
    assert "slot 0: the new node killed by SIGKILL (hung: no first report within " \
           "timeouts.boot (2s)) before its first report" in result.stderr, result.stderr
    assert app.versions(s) == {0: 1, 1: 1}


def test_a_hup_storm_runs_at_most_one_more_deploy(swarm, tmp_path):
    s = swarm(_config(nodes=2))
    s.wait_ready()
    s.signal(signal.SIGHUP)
    s.wait_output("loading the new version")
    for _ in range(100):
        s.signal(signal.SIGHUP)
    wait_for(lambda: s.output().count("reloaded: 2 node(s) replaced") >= 2, 60,
             "two deploys")
    # Watched for a while: no third one follows.
    settle = time.monotonic() + 3.0
    while time.monotonic() < settle:
        assert s.output().count("loading the new version") == 2, s.output()[-2000:]
        time.sleep(0.1)  # ok-sleep: watching that nothing more happens
    assert s.status()["mode"] == "running"


def test_hup_hup_tstp_ends_the_deploy_quiet_and_nothing_queued_resurrects_nodes(swarm):
    s = swarm(_config(nodes=2))
    s.wait_ready()
    s.signal(signal.SIGHUP)
    s.wait_output("loading the new version")
    s.signal(signal.SIGHUP)
    s.signal(signal.SIGTSTP)
    s.wait_status("quiet")
    wait_for(lambda: all(n["pid"] is None for n in s.nodes().values()), 20,
             "every node gone (a quieted steady node leaves)")
    out_then = s.output()
    settle = time.monotonic() + 3.0
    while time.monotonic() < settle:
        assert all(n["pid"] is None for n in s.nodes().values())
        time.sleep(0.1)  # ok-sleep: watching that nothing is restarted
    assert s.output().count("loading the new version") == 1
    assert "started (pid" not in s.output()[len(out_then):]
    assert s.status()["mode"] == "quiet"


def _blocked(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1], 16) for line in handle if line.startswith("SigBlk:"))


def test_hup_tstp_and_ttin_before_ready_are_never_fatal(swarm):
    """Sent from the moment swarmd's own first line runs (the signals are held then), through
    the start, until READY=1."""
    s = swarm(_config(nodes=2, app="swarmd_systemapps:late",
                      env={"TESTAPP_BOOT_DELAY": "1.0"}))
    hup_bit = 1 << (signal.SIGHUP - 1)
    wait_for(lambda: not pid_alive(s.pid) or _blocked(s.pid) & hup_bit, 10,
             "swarmd's first line")
    sent = 0
    while not s.notify.values("READY"):
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTSTP):
            s.signal(sig)
            sent += 1
        time.sleep(0.01)  # ok-sleep: the pace of the signal storm
        assert s.proc.poll() is None, s.output()
    assert sent > 3
    s.wait_status("quiet")  # the TSTPs came last: quiet
    assert s.proc.poll() is None


def test_a_stop_during_a_deploy_ends_it_and_stops(swarm, tmp_path):
    app = DeployedApp(tmp_path)
    app.write(1)
    s = swarm(app.config(nodes=2), env=app.env())
    s.wait_ready()
    app.write(2, at_import="import time\ntime.sleep(3600)")
    s.signal(signal.SIGHUP)
    s.wait_output("loading the new version")
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    assert not [p for p in children(s.pid) if pid_alive(p)]


FIRST_START_FAILURES = {
    "sys.exit at import": ("import sys\nsys.exit(3)", "called sys.exit(3)"),
    "exception at import": ("raise KeyError('surprise')", "KeyError: 'surprise'"),
    "hang at import": ("import time\ntime.sleep(3600)", "did not finish within timeouts.boot"),
    "crash at import": ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
                        "killed by SIGSEGV while importing the app"),
}


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize("case", sorted(FIRST_START_FAILURES))
def test_the_first_start_and_check_refuse_an_app_that_cannot_be_imported(tmp_path, case,
                                                                         command):
    at_import, reason = FIRST_START_FAILURES[case]
    app = DeployedApp(tmp_path)
    app.write(1, at_import=at_import)
    config = tmp_path / "swarmd.yaml"
    import yaml

    # preload off: the app is tried all the same (every node would import it)
    config.write_text(yaml.safe_dump(app.config(nodes=2, preload=False,
                                                timeouts={"boot": "2s"})))
    env = {**os.environ, **app.env(), "RUNTIME_DIRECTORY": str(tmp_path / "run")}
    env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run([sys.executable, "-m", "swarmd", command, "-c", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 78, result.stderr
    assert reason in result.stderr, result.stderr
    assert f"{config} is not valid" in result.stderr
    assert "started" not in result.stderr
    assert not list(app.state.iterdir())  # no node ever ran


def _importers(app: DeployedApp, s) -> dict[int, int]:
    """node id -> the pid of the process that imported the app the node runs."""
    out = {}
    for node_id, node in s.nodes().items():
        path = app.state / f"{node_id}.importer"
        text = path.read_text().split() if path.exists() else []
        out[node_id] = int(text[1]) if len(text) == 2 and int(text[0]) == node["pid"] else -1
    return out


IMPORTER = ("import os, time\nIMPORTER = os.getpid()\n{slow}")
RECORD = ("with open(os.path.join(os.environ['DEPLOY_STATE'], f'{node.id}.importer'), 'w') as f:"
          "\n    f.write(f'{os.getpid()} {IMPORTER}')")


@pytest.mark.parametrize(("slow", "preload"), [(True, True), (False, True), (True, False)])
def test_a_slow_import_is_not_paid_twice_on_the_way_to_ready(swarm, tmp_path, slow, preload):
    """A first start tries the app in a loader process; when its import is slow, that loader
    forks the fleet itself (the supervisor imports the app meanwhile, for its later forks);
    when it is quick, the supervisor imports it again and forks. Either way the nodes are the
    supervisor's children, and a restart comes from the supervisor's own import. Without
    preload every node imports the app itself, always."""
    app = DeployedApp(tmp_path)
    app.write(1, at_import=IMPORTER.format(slow="time.sleep(0.5)" if slow else ""),
              in_run=RECORD)
    s = swarm(app.config(nodes=3, preload=preload), env=app.env())
    s.wait_ready()
    importers = wait_for(lambda: (i := _importers(app, s)) and -1 not in i.values() and i, 10,
                         "every node telling who imported its app")
    nodes = s.nodes()
    assert set(children(s.pid)) >= {n["pid"] for n in nodes.values()}
    if not preload:
        assert importers == {i: n["pid"] for i, n in nodes.items()}
    elif slow:
        assert s.pid not in importers.values() and len(set(importers.values())) == 1
    else:
        assert set(importers.values()) == {s.pid}
    os.kill(nodes[1]["pid"], signal.SIGKILL)

    def restarted() -> bool:
        pid = s.nodes()[1]["pid"]
        importer = _importers(app, s).get(1)
        return pid not in (None, nodes[1]["pid"]) and importer == (s.pid if preload else pid)
    wait_for(restarted, 10, "node 1 restarted by the supervisor")
