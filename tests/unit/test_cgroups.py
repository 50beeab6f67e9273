"""swarmd.node.cgroups on a fake cgroup tree: a temp directory laid out like cgroupfs, with a
fake /proc/self beside it. It proves the paths this host cannot run for real (memory.current,
memory.max, memory.events, a v1-only host, a read-only cgroupfs); the real kernel's side is
tests/system/test_cgroups.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swarmd.node import cgroups
from swarmd.node.cgroups import CgroupTree, Kill, Off
from tests.waiting import wait_for

UNIT = "/system.slice/swarmd.service"
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid shared:26 - cgroup2 cgroup2 rw
"""
V1_MOUNTINFO = HYBRID_MOUNTINFO.splitlines(keepends=True)[0] + HYBRID_MOUNTINFO.splitlines(
    keepends=True)[1]
V1_CGROUP = "4:memory:/system.slice/swarmd.service\n1:name=systemd:/system.slice/swarmd.service\n"
# What the kernel puts in every new cgroup directory, and what a delegated memory adds.
CORE_FILES = {"cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n",
              "cgroup.controllers": "", "cgroup.subtree_control": "", "cgroup.kill": "",
              "cgroup.freeze": "0\n",
              "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"}
MEMORY_FILES = {"memory.current": "0\n", "memory.max": "max\n", "memory.oom.group": "0\n",
                "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"}


class FakeFs:
    """A fake /proc/self and cgroupfs under one temp dir. The kernel's part (interface files
    in a new group) is done by group(), since a plain mkdir makes an empty directory."""

    def __init__(self, root: Path, *, mountinfo: str = HYBRID_MOUNTINFO,
                 cgroup: str = f"0::{UNIT}\n") -> None:
        self.root = root
        self.proc_self = root / "proc-self"
        self.proc_self.mkdir()
        (self.proc_self / "mountinfo").write_text(mountinfo)
        (self.proc_self / "cgroup").write_text(cgroup)
        self.v2 = root / "sys/fs/cgroup/unified"

    def group(self, path: str, *, memory: bool = False, delegated: bool = False,
              controllers: str = "") -> Path:
        directory = self.v2 / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        files = {**CORE_FILES, **(MEMORY_FILES if memory else {})}
        files["cgroup.controllers"] = controllers
        for name, text in files.items():
            (directory / name).write_text(text)
        if delegated:
            os.setxattr(directory, "user.delegate", b"1")
        return directory

    def discover(self, move: bool = True) -> cgroups.Setup:
        return cgroups.discover(proc_self=str(self.proc_self), fs_root=str(self.root),
                                move=move)


@pytest.fixture
def fs(tmp_path: Path) -> FakeFs:
    return FakeFs(tmp_path)


def delegated_unit(fs: FakeFs, *, memory: bool, node_ids: tuple[int, ...] = (1,)) -> Path:
    """The unit's group as systemd leaves it with Delegate=yes, and the groups the kernel would
    make on mkdir (supervisor, node-N), with memory files when memory is enabled below it."""
    controllers = "cpu memory pids" if memory else ""
    unit = fs.group(UNIT, delegated=True, controllers=controllers)
    fs.group(f"{UNIT}/supervisor", memory=memory)
    for node_id in node_ids:
        fs.group(f"{UNIT}/node-{node_id}", memory=memory)
    return unit


# ---- finding the cgroup --------------------------------------------------------------------


def test_cgroup2_mounts_from_mountinfo() -> None:
    assert cgroups.cgroup2_mounts(HYBRID_MOUNTINFO) == [("/", "/sys/fs/cgroup/unified")]
    pure = "30 1 0:27 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroups.cgroup2_mounts(pure) == [("/", "/sys/fs/cgroup")]
    assert cgroups.cgroup2_mounts(V1_MOUNTINFO) == []
    escaped = r"30 1 0:27 /a /mnt/my\040cg rw - cgroup2 none rw" + "\n"
    assert cgroups.cgroup2_mounts(escaped) == [("/a", "/mnt/my cg")]


def test_cgroup2_path_is_the_0_line() -> None:
    assert cgroups.cgroup2_path(f"9:name=systemd:{UNIT}\n0::{UNIT}/supervisor\n") == (
        f"{UNIT}/supervisor")
    assert cgroups.cgroup2_path(V1_CGROUP) is None


@pytest.mark.parametrize("path, mounts, found", [
    (UNIT, [("/", "/sys/fs/cgroup")], f"/sys/fs/cgroup{UNIT}"),
    (UNIT, [("/", "/sys/fs/cgroup/unified")], f"/sys/fs/cgroup/unified{UNIT}"),
    # a mount of a subtree (a container without a cgroup namespace): strip its root
    (f"/machine.slice/c1{UNIT}", [("/machine.slice/c1", "/sys/fs/cgroup")],
     f"/sys/fs/cgroup{UNIT}"),
    ("/machine.slice/c1", [("/machine.slice/c1", "/sys/fs/cgroup")], "/sys/fs/cgroup"),
    ("/other/x", [("/machine.slice/c1", "/sys/fs/cgroup")], None),
    ("/machine.slice/c10", [("/machine.slice/c1", "/sys/fs/cgroup")], None),
    ("/../..", [("/", "/sys/fs/cgroup")], None),  # outside our cgroup namespace (nsenter)
    (UNIT, [("/", "/a"), ("/system.slice", "/b")], "/b/swarmd.service"),  # deepest root
])
def test_locate(path: str, mounts: list[tuple[str, str]], found: str | None) -> None:
    assert cgroups.locate(path, mounts) == found


def test_a_delegated_unit_moves_the_supervisor_into_its_leaf(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False)
    setup = fs.discover()
    assert setup.off is None, setup.message
    assert setup.tree is not None
    assert setup.tree.base == str(unit)
    assert (unit / "supervisor/cgroup.procs").read_text() == str(os.getpid())
    assert setup.tree.controllers == frozenset()
    assert setup.message == f"cgroups: nodes under {unit} (controllers: none)"


def test_delegated_controllers_are_enabled_one_by_one(fs: FakeFs) -> None:
    unit = fs.group(UNIT, delegated=True, controllers="cpuset cpu io memory hugetlb pids")
    fs.group(f"{UNIT}/supervisor")
    setup = fs.discover()
    assert setup.tree is not None
    assert setup.tree.controllers == {"cpu", "memory", "pids"}
    assert setup.tree.memory and setup.tree.cpu
    # one write per controller, the last one left in the fake file; none beyond CONTROLLERS
    assert (unit / "cgroup.subtree_control").read_text() == "+pids"


def test_a_refused_controller_does_not_keep_the_others_off(fs: FakeFs, monkeypatch) -> None:
    unit = fs.group(UNIT, delegated=True, controllers="cpu memory pids")
    (unit / "cgroup.subtree_control").write_text("pids\n")  # already on: not written again
    written: list[str] = []
    real_write = cgroups._write

    def kernel(path: str, text: str) -> None:
        written.append(text)
        if text == "+cpu":  # e.g. EBUSY: the cpu controller refused while threads are RT
            raise OSError(16, "Device or resource busy")
        real_write(path, text)

    monkeypatch.setattr(cgroups, "_write", kernel)
    assert cgroups.enable_controllers(str(unit)) == {"memory", "pids"}
    assert written == ["+cpu", "+memory"]


def test_a_refused_write_leaves_the_controller_off(fs: FakeFs) -> None:
    unit = fs.group(UNIT, delegated=True, controllers="memory")
    (unit / "cgroup.subtree_control").unlink()  # every write fails: as if not delegated
    assert cgroups.enable_controllers(str(unit)) == frozenset()


def test_after_an_exec_it_finds_itself_in_the_supervisor_leaf(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=True)
    (fs.proc_self / "cgroup").write_text(f"0::{UNIT}/supervisor\n")
    setup = fs.discover()
    assert setup.tree is not None and setup.tree.base == str(unit)


@pytest.mark.parametrize("mountinfo, cgroup, off", [
    (V1_MOUNTINFO, V1_CGROUP, Off.NO_V2),
    (HYBRID_MOUNTINFO, V1_CGROUP, Off.NO_V2_PATH),
    (HYBRID_MOUNTINFO, "0::/\n", Off.ROOT),
    (HYBRID_MOUNTINFO, "0::/../..\n", Off.OUTSIDE),
    (HYBRID_MOUNTINFO, "0::/user.slice/user-0.slice/session-1.scope\n", Off.NOT_DELEGATED),
])
def test_where_cgroups_are_off(tmp_path: Path, mountinfo: str, cgroup: str, off: Off) -> None:
    fs = FakeFs(tmp_path, mountinfo=mountinfo, cgroup=cgroup)
    fs.group("/user.slice/user-0.slice/session-1.scope")  # writable, but not delegated
    setup = fs.discover()
    assert (setup.tree, setup.off) == (None, off)
    assert setup.message.startswith(f"cgroups off: {off.value}")


def test_a_unit_without_delegate_is_not_split(fs: FakeFs) -> None:
    unit = fs.group(UNIT)  # Delegate=no: no mark
    setup = fs.discover()
    assert setup.off is Off.NOT_DELEGATED
    assert "Delegate=yes" in setup.message
    assert not (unit / "supervisor").exists()


def test_a_read_only_cgroupfs_names_the_unit_setting(fs: FakeFs, monkeypatch) -> None:
    delegated_unit(fs, memory=False)

    def read_only(path: str, *args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")  # EROFS, what ProtectControlGroups=yes gives

    monkeypatch.setattr(cgroups.os, "makedirs", read_only)
    setup = fs.discover()
    assert setup.off is Off.READ_ONLY
    assert "ProtectControlGroups=no" in setup.message
    assert "Read-only file system" in setup.message


def test_unreadable_proc_self(tmp_path: Path) -> None:
    setup = cgroups.discover(proc_self=str(tmp_path / "missing"))
    assert setup.off is Off.NO_V2


def test_discover_without_moving(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False)
    assert fs.discover(move=False).tree is not None
    assert (unit / "supervisor/cgroup.procs").read_text() == ""


# ---- node groups: the v2 memory paths ------------------------------------------------------


def test_create_sets_memory_max_and_oom_group(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=True, node_ids=(3,))
    tree = CgroupTree(str(unit), frozenset({"cpu", "memory", "pids"}))
    assert tree.create(3, memory_max=1 << 30)
    assert (unit / "node-3/memory.max").read_text() == str(1 << 30)
    assert (unit / "node-3/memory.oom.group").read_text() == "1"
    assert tree.create(3, memory_max=None)  # a reload lifted the bound: reuse, `max` again
    assert (unit / "node-3/memory.max").read_text() == "max"
    assert tree.problem is None


def test_create_without_memory_makes_the_group_only(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=())
    tree = CgroupTree(str(unit))
    assert tree.create(7, memory_max=1 << 30)  # no memory controller: nothing to bound here
    assert (unit / "node-7").is_dir()
    assert not (unit / "node-7/memory.max").exists()
    assert not tree.set_memory_max(7, 1 << 30)
    assert "memory controller is not delegated" in (tree.problem or "")
    assert "limits.memory_max is not enforced" in (tree.problem or "")


def test_create_fails_cleanly(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=True, node_ids=(1,))
    (unit / "node-1/memory.max").unlink()  # the kernel refused the file
    tree = CgroupTree(str(unit), frozenset({"memory"}))
    assert tree.create(1, 1 << 20) is False
    assert tree.problem == (f"cgroup: cannot write {unit}/node-1/memory.max: "
                            f"No such file or directory")


def test_memory_current_and_oom_kills(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=True, node_ids=(2,))
    tree = CgroupTree(str(unit), frozenset({"memory"}))
    (unit / "node-2/memory.current").write_text("52428800\n")
    assert tree.memory_current(2) == 50 << 20
    assert tree.oom_kills(2) == 0
    (unit / "node-2/memory.events").write_text(
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
    assert tree.oom_kills(2) == 1


def test_memory_readings_degrade(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=True, node_ids=(2,))
    tree = CgroupTree(str(unit), frozenset({"memory"}))
    (unit / "node-2/memory.current").write_text("garbage\n")
    assert tree.memory_current(2) is None
    assert tree.problem is not None and "memory.current" in tree.problem
    (unit / "node-2/memory.events").write_text("low 0\n")
    assert tree.oom_kills(2) is None
    assert CgroupTree(str(unit)).memory_current(2) is None  # memory not delegated: no figure
    assert CgroupTree(str(unit)).oom_kills(2) is None


def test_cpu_usec(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(4,))
    tree = CgroupTree(str(unit))
    (unit / "node-4/cpu.stat").write_text("usage_usec 1234567\nuser_usec 1000000\n")
    assert tree.cpu_usec(4) == 1234567
    assert tree.cpu_usec(5) is None  # no such group
    assert tree.problem is not None and "node-5/cpu.stat" in tree.problem


@pytest.mark.parametrize("before, after, sig, by_swarmd, verdict", [
    (0, 1, signal.SIGKILL, False, True),  # the kernel's OOM killer
    (1, 1, signal.SIGKILL, False, False),  # killed by SIGKILL, not by the OOM killer
    (0, 1, signal.SIGKILL, True, False),  # swarmd killed it (shutdown timeout)
    (0, 1, signal.SIGTERM, False, False),  # not a SIGKILL: not the OOM killer
    (0, 1, None, False, False),  # exited
    (None, None, signal.SIGKILL, False, None),  # no memory.events: cannot tell
    (0, None, signal.SIGKILL, False, None),
])
def test_oom_killed(before: int | None, after: int | None, sig: int | None, by_swarmd: bool,
                    verdict: bool | None) -> None:
    assert cgroups.oom_killed(sig, before, after, killed_by_swarmd=by_swarmd) is verdict


def test_oom_killed_read_from_the_fake_tree(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=True, node_ids=(6,))
    tree = CgroupTree(str(unit), frozenset({"memory"}))
    at_start = tree.oom_kills(6)
    (unit / "node-6/memory.events").write_text("oom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.oom_killed(signal.SIGKILL, at_start, tree.oom_kills(6)) is True
    without = CgroupTree(str(unit))  # memory not delegated (this host's unified hierarchy)
    assert cgroups.oom_killed(signal.SIGKILL, without.oom_kills(6), without.oom_kills(6)) is None


# ---- moving, listing, populated, kill ------------------------------------------------------


def test_attach_writes_the_pid_and_procs_reads_them(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    tree = CgroupTree(str(unit))
    assert tree.attach(1, 4242)
    assert (unit / "node-1/cgroup.procs").read_text() == "4242"
    (unit / "node-1/cgroup.procs").write_text("4242\n4243\n")
    assert tree.procs(1) == [4242, 4243]
    assert tree.procs(9) == []  # no group: nothing in it
    assert not tree.attach(9, 4242)
    assert tree.problem is not None and "move pid 4242 into" in tree.problem


def test_procs_fd_is_written_by_the_child(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    tree = CgroupTree(str(unit))
    fd = tree.procs_fd(1)
    assert fd is not None
    try:
        assert not os.get_inheritable(fd)  # not passed on to an exec'd command node
        os.write(fd, b"0")
    finally:
        os.close(fd)
    assert (unit / "node-1/cgroup.procs").read_text() == "0"
    assert tree.procs_fd(8) is None


def test_populated_from_cgroup_events_else_procs(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    tree = CgroupTree(str(unit))
    assert tree.populated(1) is False
    (unit / "node-1/cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert tree.populated(1) is True
    fd = tree.events_fd(1)
    assert fd is not None
    assert cgroups.read_events(fd) is True
    (unit / "node-1/cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert cgroups.read_events(fd) is False  # read again from the start
    os.close(fd)
    (unit / "node-1/cgroup.events").unlink()  # an old kernel: the pids tell
    (unit / "node-1/cgroup.procs").write_text("77\n")
    assert tree.populated(1) is True


def test_kill_writes_cgroup_kill(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    tree = CgroupTree(str(unit))
    assert tree.kill(1) is Kill.CGROUP_KILL
    assert (unit / "node-1/cgroup.kill").read_text() == "1"
    assert tree.kill(2) is Kill.EMPTY  # never made: nothing to kill


def sleeper() -> subprocess.Popen[bytes]:
    # ok-sleep: a process for the test to kill
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_kill_without_cgroup_kill_signals_each_pid_frozen(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    (unit / "node-1/cgroup.kill").unlink()  # Linux < 5.14
    victims = [sleeper(), sleeper()]
    (unit / "node-1/cgroup.procs").write_text("".join(f"{p.pid}\n" for p in victims))
    tree = CgroupTree(str(unit))
    assert tree.kill(1) is Kill.SIGNALLED
    assert [p.wait(timeout=10) for p in victims] == [-signal.SIGKILL] * 2
    assert (unit / "node-1/cgroup.freeze").read_text() == "0"  # frozen, then thawed


def test_kill_without_cgroup_kill_or_freeze(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    (unit / "node-1/cgroup.kill").unlink()
    (unit / "node-1/cgroup.freeze").unlink()
    victim = sleeper()
    (unit / "node-1/cgroup.procs").write_text(f"{victim.pid}\n")
    tree = CgroupTree(str(unit))
    assert tree.kill(1) is Kill.SIGNALLED  # rounds until the fake file stops listing it
    assert victim.wait(timeout=10) == -signal.SIGKILL
    (unit / "node-1/cgroup.procs").write_text("")
    assert tree.kill(1) is Kill.EMPTY


def test_kill_failure_says_so(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=(1,))
    (unit / "node-1/cgroup.kill").unlink()
    (unit / "node-1/cgroup.kill").mkdir()  # any error but ENOENT: not ours to guess
    tree = CgroupTree(str(unit))
    assert tree.kill(1) is Kill.FAILED
    assert tree.problem is not None and "cgroup.kill" in tree.problem


def test_remove(fs: FakeFs) -> None:
    unit = delegated_unit(fs, memory=False, node_ids=())
    tree = CgroupTree(str(unit))
    assert tree.create(5)
    assert tree.remove(5) and not (unit / "node-5").exists()
    assert tree.remove(5)  # already gone
    fs.group(f"{UNIT}/node-6")  # not empty (a real one: EBUSY while processes are in it)
    assert not tree.remove(6)
    assert tree.problem is not None and "remove" in tree.problem


# ---- the process group, without cgroups ----------------------------------------------------


def test_kill_process_group_takes_the_helpers() -> None:
    # A node-like leader (its own group) that starts a helper, then is SIGKILLed itself.
    leader = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, sys, time\n"
         "os.setpgid(0, 0)\n"  # what swarmd's child does: its own process group
         "h = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
         "print(h.pid, flush=True)\n"
         "time.sleep(60)\n"],  # ok-sleep: the node and its helper wait to be killed
        stdout=subprocess.PIPE)
    assert leader.stdout is not None
    helper = int(leader.stdout.readline())
    assert os.getpgid(helper) == leader.pid
    assert not cgroups.process_group_empty(leader.pid)
    assert cgroups.kill_process_group(leader.pid)  # while the leader is unreaped
    assert leader.wait(timeout=10) == -signal.SIGKILL
    wait_for(lambda: cgroups.process_group_empty(leader.pid), 10, "the helper to go")
    assert not cgroups.kill_process_group(leader.pid)  # nothing left to signal
