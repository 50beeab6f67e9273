"""swarmd.node.cgroups against a real systemd and kernel, without swarmd's supervisor: a
transient `Delegate=yes` unit runs tests/system/cgroup_probe.py, which makes node groups,
moves nodes (with a helper and a double-forked daemon) into them, reads cpu.stat, waits for
`populated 0` through EPOLLPRI after cgroup.kill, and measures moving a fresh fork into its
group. Plus: what the shipped unit's sandbox needs for cgroups (only ProtectControlGroups=no),
and that a unit without Delegate=yes is left alone."""

from __future__ import annotations

import json
import secrets
import sys
import textwrap
from pathlib import Path

import pytest

from tests.system.container import Container, wait_for
from tests.system.swarmd_service import INSTALLED, PACKAGING, SERVICE_PYTHON

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "system" / "cgroup_probe.py"
ROUNDS = 30  # forks per way of moving: a median and p90 worth printing
# Seconds between two moves: a restart comes alone. Back to back, a move costs ~30-100 us;
# alone, it waits for an RCU grace period (~10 ms here): cgroup_threadgroup_rwsem's writer
# side, unless the cgroup2 mount has `favordynmods`.
SPACING = 0.1
# [Service] keys of the shipped unit that are not its sandbox (the rest is passed as is).
NOT_SANDBOX = {"Type", "NotifyAccess", "ExecStart", "ExecReload", "KillMode", "TimeoutStopSec",
               "TimeoutStartSec", "WatchdogSec", "Restart", "RestartSec",
               "RestartPreventExitStatus", "RuntimeDirectory", "RuntimeDirectoryMode",
               "LimitNOFILE", "Delegate", "OOMPolicy"}
DISCOVER = textwrap.dedent("""\
    import os
    from swarmd.node import cgroups
    setup = cgroups.discover()
    print(setup.off.name if setup.off else "ON")
    print(setup.message)
    tree = setup.tree
    if tree is not None:
        assert tree.create(1), tree.problem
        pid = os.fork()
        if pid == 0:
            os.read(os.open("/dev/null", os.O_RDONLY), 1)
            os.kill(os.getpid(), 19)  # SIGSTOP: wait to be killed
            os._exit(0)
        assert tree.attach(1, pid), tree.problem
        assert tree.procs(1) == [pid], tree.procs(1)
        assert (tree.cpu_usec(1) or 0) >= 0, tree.problem
        assert tree.kill(1) is cgroups.Kill.CGROUP_KILL, tree.problem
        os.waitpid(pid, 0)
        assert tree.remove(1), tree.problem
        print("node group made, used, killed, removed")
    """)


def sandbox() -> list[str]:
    """The shipped swarmd.service's sandbox settings as `systemd-run -p` arguments."""
    args, section = [], ""
    for line in (PACKAGING / "swarmd.service").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#") and "=" in line:
            key = line.partition("=")[0]
            if key not in NOT_SANDBOX:
                args += ["-p", line]
    return args


def run_discover(container: Container, *properties: str) -> list[str]:
    """discover() and one node group in a transient unit; its output lines."""
    out = container.run(
        "systemd-run", "--quiet", "--wait", "--pipe", f"--unit=cg-{secrets.token_hex(4)}",
        *properties, f"--setenv=PYTHONPATH={INSTALLED}", str(SERVICE_PYTHON), "-c", DISCOVER,
        check=False, timeout=60)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    return out.stdout.splitlines()


def test_node_groups_in_a_delegated_unit(container: Container) -> None:
    unit = f"cg-probe-{secrets.token_hex(4)}.service"
    where = f"/run/{unit}"
    container.run("mkdir", "-p", where)
    container.run("systemd-run", "--quiet", f"--unit={unit}", "-p", "Delegate=yes",
                  f"--setenv=PYTHONPATH={REPO}", sys.executable, str(PROBE), where, str(ROUNDS),
                  str(SPACING))

    def read(name: str) -> dict | None:
        out = container.run("cat", f"{where}/{name}", check=False)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout else None

    nodes = wait_for(lambda: read("nodes.json"), 30, "the probe's node groups")
    assert nodes["setup"].startswith("cgroups: nodes under /sys/fs/cgroup/unified/system.slice/"
                                     f"{unit}"), nodes
    assert f"0::/system.slice/{unit}/supervisor" in nodes["own_cgroup"]
    node1 = nodes["node1"]
    assert node1["populated"] is True
    assert node1["pid"] in node1["procs"]
    assert len(node1["procs"]) == 3, node1  # the node, its helper and the setsid daemon
    assert nodes["node2"]["procs"] == [nodes["node2"]["pid"]]
    assert nodes["node2"]["cpu_usec"] >= 250_000  # it burned 0.3 s of CPU in its group
    assert nodes["memory_current"] is None  # no memory controller on this host's v2

    status = container.systemctl("status", "--no-pager", unit)
    tree = [line.strip(" │├└─") for line in status.splitlines()]
    for branch in ("node-1", "node-2", "supervisor"):
        assert branch in tree, status  # one branch per node in `systemctl status`

    container.run("touch", f"{where}/go")
    result = wait_for(lambda: read("result.json"), 60, "the probe's results")
    kill = result["kill1"]
    assert kill["kill"] == "cgroup.kill"
    assert (kill["populated_before"], kill["populated_after"]) == (True, False), kill
    assert kill["epollpri"], kill  # cgroup.events wakes an epoll with EPOLLPRI
    assert result["node1_after"] == {"procs": [], "populated": False}  # daemon and helper too
    assert result["kill2"] == "cgroup.kill"
    assert result["remove"] == [True, True, True]
    assert result["problem"] is None
    moves = result["move_us"]
    for how in ("parent_pid", "child_fd", "child_open"):
        assert moves[how]["n"] == ROUNDS
    print(f"\nmoving a fresh fork into its node group, {SPACING:g} s apart "
          f"(us, median / p90 / max):")
    for how, figures in moves.items():
        print(f"  {how:10}  {figures['median']:7.1f} / {figures['p90']:7.1f} / "
              f"{figures['max']:8.1f}  (n={figures['n']})")


def test_the_shipped_sandbox_leaves_only_the_delegated_subtree_writable(
        container: Container) -> None:
    shipped = sandbox()
    assert "DynamicUser=yes" in shipped and "PrivateUsers=yes" in shipped  # it is the sandbox
    assert "ProtectControlGroups=no" in shipped
    works = run_discover(container, "-p", "Delegate=yes", *shipped)
    assert works[0] == "ON", works
    assert works[-1] == "node group made, used, killed, removed"

    # what the unit would be without the relaxation: systemd 252 makes the whole cgroup file
    # system read-only, the delegated subtree too, and swarmd says what to change
    strict = [arg.replace("ProtectControlGroups=no", "ProtectControlGroups=yes")
              for arg in shipped]
    read_only = run_discover(container, "-p", "Delegate=yes", *strict)
    assert read_only[0] == "READ_ONLY", read_only
    assert "the unit needs ProtectControlGroups=no" in read_only[1]
    assert "Read-only file system" in read_only[1]


def test_a_unit_without_delegate_is_left_alone(container: Container) -> None:
    out = run_discover(container)
    assert out[0] == "NOT_DELEGATED", out
    assert "Delegate=yes" in out[1]
