"""The shipped units under a real systemd: start/READY, status, reload, stop, exit 78, the
watchdog, and two template instances side by side."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.system.container import Container, wait_for
from tests.system.swarmd_service import SWARMD, Swarmd, field

pytestmark = pytest.mark.system


@pytest.mark.parametrize("unit", ["swarmd.service", "swarmd@fleet.service"])
def test_units_load_and_verify_cleanly(units: Container, unit: str) -> None:
    done = units.run("systemd-analyze", "verify", unit, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    shown = units.systemctl("show", unit, "--property=Type,NotifyAccess,KillMode,Restart,"
                            "RestartPreventExitStatus,TimeoutStopUSec,DynamicUser")
    assert dict(line.split("=", 1) for line in shown.splitlines()) == {
        "Type": "notify", "NotifyAccess": "main", "KillMode": "mixed",
        "Restart": "on-failure", "RestartPreventExitStatus": "78",
        "TimeoutStopUSec": "45s", "DynamicUser": "yes"}


def test_start_returns_after_ready_with_every_node_healthy(swarmd: Swarmd) -> None:
    took = swarmd.start(nodes=3, app="swarmd_systemapps:late",
                        env={"TESTAPP_PERIOD": "0.2", "TESTAPP_BOOT_DELAY": "1.0"})

    # Type=notify: `systemctl start` came back only after READY=1, i.e. after every node
    # sent its first report, which the nodes delay by a second.
    assert took >= 1.0, f"start returned after {took:.2f}s, before the nodes reported"
    assert swarmd.prop("ActiveState") == "active"
    assert swarmd.prop("SubState") == "running"
    assert swarmd.prop("StatusText") == "3/3 healthy, 0 restarts"
    ready = swarmd.wait_event("swarmd.ready")[0]
    assert field(ready, "SYSLOG_IDENTIFIER") == "swarmd"
    assert "every node reported its first health" in field(ready, "MESSAGE")
    assert int(field(ready, "_PID")) == swarmd.main_pid()
    # The service runs as its transient user, without capabilities.
    assert int(field(ready, "_UID")) != 0
    assert field(ready, "_CAP_EFFECTIVE") == "0"


def test_swarmd_status_talks_to_the_default_instance(swarmd: Swarmd) -> None:
    swarmd.start(nodes=2)
    pid = swarmd.main_pid()

    table = swarmd.cli("status").stdout
    lines = table.splitlines()
    assert lines[0] == f"swarmd (pid {pid}): 2/2 healthy, 0 restarts"
    assert lines[1].split() == ["ID", "PID", "STATE", "HEALTH", "RESTARTS", "GEN", "UPTIME",
                                "CPU", "MEMORY"]
    assert [line.split()[0] for line in lines[2:]] == ["0", "1"]
    assert all("running" in line and "0 healthy" in line for line in lines[2:])

    data = swarmd.status()
    assert data["pid"] == pid
    assert data["config"] == "/etc/swarmd.yaml"
    assert [n["generation"] for n in data["nodes"]] == [0, 0]
    # The socket is in the unit's RuntimeDirectory, only for the service's user (and root).
    mode = swarmd.c.run("stat", "-c", "%a %u", "/run/swarmd/control.sock").stdout.split()
    assert mode[0] == "600"
    assert int(mode[1]) == int(swarmd.c.run("stat", "-c", "%u", f"/proc/{pid}").stdout)
    other = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SWARMD)
    refused = swarmd.c.run(*other, "quiet", check=False)
    assert refused.returncode == 1 and "permission denied" in refused.stderr, refused
    assert swarmd.status()["mode"] == "running"
    # Any other user reads status through the read-only status.sock (under PrivateUsers=yes
    # the service sees them as nobody; the runtime directory's mode decides who gets there).
    assert swarmd.c.run("stat", "-c", "%a", "/run/swarmd/status.sock").stdout.strip() == "666"
    table = swarmd.c.run(*other, "status", check=False)
    assert table.returncode == 0, table
    assert table.stdout.splitlines()[0] == f"swarmd (pid {pid}): 2/2 healthy, 0 restarts"
    assert len(table.stdout.splitlines()) == 4


def test_reload_returns_after_every_node_was_replaced(swarmd: Swarmd) -> None:
    swarmd.start(nodes=3)
    before = swarmd.wait_healthy(3)
    assert [n["generation"] for n in before.values()] == [0, 0, 0]
    supervisor = swarmd.main_pid()
    # systemd logs the notifications it gets at debug level: proof of RELOADING=1/READY=1.
    swarmd.c.run("systemd-analyze", "log-level", "debug")
    try:
        swarmd.c.systemctl("reload", swarmd.unit)
        after = swarmd.nodes()  # right after `systemctl reload` returned
    finally:
        swarmd.c.run("systemd-analyze", "log-level", "info")

    assert [n["generation"] for n in after.values()] == [1, 1, 1], after
    assert all(n["state"] == "running" and n["code"] == 0 for n in after.values()), after
    assert not {n["pid"] for n in after.values()} & {n["pid"] for n in before.values()}
    assert swarmd.main_pid() == supervisor  # a reload, not a restart
    assert swarmd.prop("ActiveState") == "active"
    assert swarmd.prop("StatusText") == "3/3 healthy, 0 restarts"

    # Every old node was quieted (the steady app leaves on TSTP), exited, and was replaced.
    for old in before.values():
        swarmd.wait_message("quiet: leaving", f"_PID={old['pid']}")
        exited = swarmd.wait_event("node.exited", f"SWARMD_NODE_PID={old['pid']}")[0]
        assert field(exited, "SWARMD_EXIT_STATUS") == "0"
        assert field(exited, "MESSAGE").endswith("(reload)")
    swarmd.wait_event("swarmd.reloading")
    reloaded = swarmd.wait_event("swarmd.reloaded")[0]
    assert field(reloaded, "MESSAGE") == "reloaded: 3 node(s) replaced"
    # PID 1 handles notifications before the exit of ExecReload: once it logged "Reloaded",
    # its debug lines about the supervisor's RELOADING=1 and READY=1 are in the journal.
    swarmd.wait_message("Reloaded swarmd.service", "_PID=1")
    texts = [field(e, "MESSAGE") for e in swarmd.journal("_PID=1")
             if f"Got notification message from PID {supervisor} " in field(e, "MESSAGE")]
    reloading = [i for i, text in enumerate(texts) if "RELOADING=1" in text]
    assert reloading, texts
    assert any("READY=1" in text for text in texts[reloading[0] + 1:]), texts


def test_a_reload_longer_than_the_start_timeout_is_extended(swarmd: Swarmd) -> None:
    # ExecReload runs under TimeoutStartSec; the supervisor sends EXTEND_TIMEOUT_USEC while
    # its rolling reload progresses. Nodes that stay on quiet are TERMed after
    # timeouts.drain, so this reload takes 2 x 1.5 s against a 1 s timeout.
    dropin = "swarmd.service.d/60-short-start-timeout.conf"
    swarmd.c.install_unit(dropin, "[Service]\nTimeoutStartSec=1s\n")
    try:
        swarmd.start(nodes=2, env={"TESTAPP_PERIOD": "0.2", "TESTAPP_STAY_ON_QUIET": "1"},
                     timeouts={"boot": "5s", "report": "3s", "shutdown": "3s",
                               "drain": "1500ms"})
        started = time.monotonic()
        swarmd.c.systemctl("reload", swarmd.unit)
        took = time.monotonic() - started
        assert took > 2.5, f"the reload took {took:.2f}s: did the nodes not stay quiet?"
        assert [n["generation"] for n in swarmd.nodes().values()] == [1, 1]
        assert swarmd.prop("ActiveState") == "active"
    finally:
        swarmd.c.run("rm", f"/run/systemd/system/{dropin}")
        swarmd.c.systemctl("daemon-reload")


def test_reload_with_a_broken_config_fails_and_keeps_the_old_nodes(swarmd: Swarmd) -> None:
    swarmd.start(nodes=2)
    before = swarmd.wait_healthy(2)
    swarmd.write_config(raw="nodes: zero\ntimeouts: {boot: 5s}\n")

    result = swarmd.c.run("systemctl", "reload", swarmd.unit, check=False)

    assert result.returncode != 0
    assert swarmd.prop("ActiveState") == "active"
    after = swarmd.nodes()
    assert {i: n["pid"] for i, n in after.items()} == {i: n["pid"] for i, n in before.items()}
    assert all(n["generation"] == 0 and n["state"] == "running" for n in after.values())
    failed = swarmd.wait_event("swarmd.reload_failed")[0]
    assert field(failed, "PRIORITY") == "3"
    assert "the old one keeps running" in field(failed, "MESSAGE")
    assert "nodes" in field(failed, "MESSAGE")
    # `swarmd reload` (ExecReload) said why, too; its stderr is in the unit's journal.
    swarmd.wait_entries("ExecReload's own message", lambda e: "nodes" in str(e.get("MESSAGE"))
                        and int(field(e, "_PID")) != swarmd.main_pid(), 1, "_TRANSPORT=stdout")


def test_stop_terms_every_node_and_ends_inactive(swarmd: Swarmd) -> None:
    swarmd.start(nodes=3)
    nodes = swarmd.wait_healthy(3)
    supervisor = swarmd.main_pid()

    swarmd.stop()

    assert swarmd.prop("ActiveState") == "inactive"
    assert swarmd.prop("Result") == "success"
    assert swarmd.prop("ExecMainStatus") == "0"
    for node_id, node in nodes.items():
        said = swarmd.wait_message(f"steady node {node_id} stopping", f"_PID={node['pid']}")
        assert field(said, "SYSLOG_IDENTIFIER") == "swarmd-node"
        exited = swarmd.wait_event("node.exited", f"SWARMD_NODE_PID={node['pid']}")[0]
        assert field(exited, "SWARMD_EXIT_STATUS") == "0"
        assert field(exited, "MESSAGE").endswith("(stop)")
    stopping = swarmd.wait_event("swarmd.stopping")[0]
    assert "SIGTERM received" in field(stopping, "MESSAGE")
    stopped = swarmd.wait_event("swarmd.stopped")[0]
    assert int(field(stopped, "_PID")) == supervisor
    assert not swarmd.events("node.killed")


def test_invalid_config_exits_78_and_is_not_restarted(swarmd: Swarmd) -> None:
    swarmd.write_config(raw="nodes: 2\nbogus_key: 1\n")
    swarmd.cursor = swarmd.c.journal_cursor()

    result = swarmd.c.run("systemctl", "start", swarmd.unit, check=False)

    assert result.returncode != 0
    assert swarmd.prop("ExecMainStatus") == "78"
    assert swarmd.prop("Result") == "exit-code"
    # RestartPreventExitStatus=78: "failed" at once, not "auto-restart" (waiting to restart).
    assert swarmd.prop("ActiveState") == "failed"
    assert swarmd.prop("SubState") == "failed"
    assert swarmd.prop("NRestarts") == "0"
    swarmd.wait_message("bogus_key", "_TRANSPORT=stdout")


def test_watchdog_kills_a_frozen_supervisor_and_systemd_restarts_it(swarmd: Swarmd) -> None:
    swarmd.start(nodes=2)
    frozen = swarmd.main_pid()
    old_nodes = swarmd.wait_healthy(2)
    restarts = int(swarmd.prop("NRestarts"))
    assert swarmd.prop("WatchdogUSec") == "10s"

    swarmd.c.run("kill", "-STOP", str(frozen))

    # WatchdogSec=10s, RestartSec=2s: a new supervisor within ~15 s.
    wait_for(lambda: swarmd.prop("ActiveState") == "active"
             and int(swarmd.prop("NRestarts")) > restarts
             and swarmd.main_pid() not in (0, frozen),
             timeout=40, what="systemd to kill the frozen supervisor and start a new one")
    swarmd.wait_message("Watchdog timeout", "_PID=1")
    new_nodes = swarmd.wait_healthy(2)
    assert not {n["pid"] for n in new_nodes.values()} & {n["pid"] for n in old_nodes.values()}
    for node in old_nodes.values():  # KillMode=mixed: the old nodes died with their supervisor
        assert swarmd.c.run("kill", "-0", str(node["pid"]), check=False).returncode != 0


def test_template_instances_run_side_by_side(units: Container) -> None:
    a, b = Swarmd(units, "a"), Swarmd(units, "b")
    try:
        a.start(nodes=2)
        b.start(nodes=3, node_id_offset=10)

        assert a.prop("ActiveState") == b.prop("ActiveState") == "active"
        assert a.prop("StatusText") == "2/2 healthy, 0 restarts"
        assert b.prop("StatusText") == "3/3 healthy, 0 restarts"
        assert a.main_pid() != b.main_pid()
        assert sorted(a.nodes()) == [0, 1]
        assert sorted(b.nodes()) == [10, 11, 12]
        assert a.status()["config"] == "/etc/swarmd/a.yaml"
        assert b.status()["config"] == "/etc/swarmd/b.yaml"
        for name in ("a", "b"):
            sock = units.run("test", "-S", f"/run/swarmd-{name}/control.sock", check=False)
            assert sock.returncode == 0, f"no control socket in /run/swarmd-{name}"
        table = units.run(SWARMD, "status", "-i", "a").stdout
        assert table.splitlines()[0] == f"swarmd (pid {a.main_pid()}): 2/2 healthy, 0 restarts"
        # ExecReload is a bare `swarmd reload`: it finds /run/swarmd-a through
        # $RUNTIME_DIRECTORY (the fallback would be /run/swarmd, which does not exist here).
        assert units.run("test", "-e", "/run/swarmd", check=False).returncode != 0
        b_pids = {n["pid"] for n in b.nodes().values()}
        units.systemctl("reload", a.unit)
        assert [n["generation"] for n in a.nodes().values()] == [1, 1]
        assert [n["generation"] for n in b.nodes().values()] == [0, 0, 0]
        assert {n["pid"] for n in b.nodes().values()} == b_pids
        # Each instance's journal holds its own nodes only.
        assert {field(e, "SWARMD_NODE_ID") for e in a.events("node.started")} == {"0", "1"}
        assert {field(e, "SWARMD_NODE_ID") for e in b.events("node.started")} == {
            "10", "11", "12"}
        # ... and `journalctl -t swarmd` of the host tells the fleets apart by SWARMD_FLEET
        for fleet, nodes in (("a", {"0", "1"}), ("b", {"10", "11", "12"})):
            started = units.journal("SYSLOG_IDENTIFIER=swarmd", "SWARMD_EVENT=node.started",
                                    f"SWARMD_FLEET={fleet}", since_cursor=a.cursor)
            assert {field(e, "SWARMD_NODE_ID") for e in started} >= nodes, started
    finally:
        a.reset()
        b.reset()


def test_status_is_for_the_units_group_when_the_runtime_directory_says_so(
        swarmd: Swarmd) -> None:
    # The operator's way to close status to everyone but a group: Group= names a static group
    # and RuntimeDirectoryMode=0750; systemd sets the directory's owner and mode from outside
    # the unit's user namespace, so it holds under PrivateUsers=yes.
    c = swarmd.c
    c.run("groupadd", "--system", "swarmd-ops")
    for user, groups in (("operator1", ["--groups", "swarmd-ops"]), ("outsider", [])):
        c.run("useradd", "--system", "--no-create-home", "--user-group", *groups, user)
    dropin = "swarmd.service.d/60-status-group.conf"
    c.install_unit(dropin, "[Service]\nGroup=swarmd-ops\nRuntimeDirectoryMode=0750\n")
    try:
        swarmd.start(nodes=1)
        pid = swarmd.main_pid()
        assert c.run("stat", "-c", "%a %G", "/run/swarmd").stdout.split() == ["750",
                                                                              "swarmd-ops"]

        def as_user(user: str, *args: str) -> subprocess.CompletedProcess[str]:
            return c.run("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                         SWARMD, *args, check=False)

        member = as_user("operator1", "status")
        assert member.returncode == 0, member
        assert member.stdout.splitlines()[0] == f"swarmd (pid {pid}): 1/1 healthy, 0 restarts"
        quiet = as_user("operator1", "quiet")
        assert quiet.returncode == 1 and "permission denied" in quiet.stderr, quiet
        other = as_user("outsider", "status")
        assert other.returncode == 4, other
        assert "RuntimeDirectoryMode" in other.stderr, other
        assert swarmd.status()["mode"] == "running"
    finally:
        swarmd.reset()
        c.run("rm", f"/run/systemd/system/{dropin}")
        c.systemctl("daemon-reload")
