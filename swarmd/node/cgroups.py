"""A cgroup v2 per node under the unit's delegated cgroup; the process group where there is none.

Layout, under the cgroup systemd gave the unit (`Delegate=yes`):

    <unit>/supervisor    the supervisor alone (a cgroup with processes in it cannot give its
                         children controllers: the "no internal processes" rule)
    <unit>/node-N        node N and everything it starts, reused by each generation of slot N

Found through /proc/self/cgroup (the `0::` line) and the cgroup2 mount in /proc/self/mountinfo,
so a hybrid host (v2 at /sys/fs/cgroup/unified) works like a pure v2 one. Delegation is told by
the `user.delegate` / `trusted.delegate` xattr systemd (>= 251) sets on a delegated cgroup;
anything else (the foreground, a login session, a unit without Delegate=yes, a v1-only host)
is not ours to split, and swarmd runs without cgroups (`"cgroups": false`).

Nothing here raises OSError into the caller: a failure is a falsy result plus `problem`, a line
that says what failed and, where the operator can fix it, how.
"""

from __future__ import annotations

import enum
import errno
import os
import signal
from typing import NamedTuple

CONTROLLERS = ("cpu", "memory", "pids")  # what swarmd reads or bounds, enabled where delegated
SUPERVISOR_LEAF = "supervisor"
DELEGATE_XATTRS = ("user.delegate", "trusted.delegate")  # trusted.* needs CAP_SYS_ADMIN
MAX_KILL_ROUNDS = 3  # without cgroup.kill: SIGKILL what cgroup.procs lists, at most this often
_READ = os.O_RDONLY | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_CLOEXEC | os.O_TRUNC  # O_TRUNC: what `echo >` does; a no-op there


class Off(enum.Enum):
    """Why swarmd runs without cgroups; each says what would change it."""

    NO_V2 = "no cgroup v2 hierarchy is mounted (a cgroup v1 host)"
    NO_V2_PATH = "this process has no cgroup v2 path (/proc/self/cgroup has no 0:: line)"
    OUTSIDE = "this process's cgroup is not visible under the cgroup2 mount (another namespace)"
    ROOT = "this process is in the root cgroup: run swarmd as a systemd unit with Delegate=yes"
    NOT_DELEGATED = ("the cgroup is not delegated to swarmd: run it as a systemd unit with "
                     "Delegate=yes (systemd >= 251 marks it)")
    READ_ONLY = ("the cgroup file system is read-only: the unit needs ProtectControlGroups=no "
                 "(with Delegate=yes)")
    DENIED = "no permission to create cgroups under the unit's cgroup"
    FAILED = "creating the supervisor's cgroup failed"


class Setup(NamedTuple):
    """What discover() found: a tree to use, or why not (with the path and error in detail)."""

    tree: CgroupTree | None
    off: Off | None
    detail: str

    @property
    def message(self) -> str:
        if self.tree is not None:
            controllers = ", ".join(sorted(self.tree.controllers)) or "none"
            return f"cgroups: nodes under {self.tree.base} (controllers: {controllers})"
        assert self.off is not None
        return f"cgroups off: {self.off.value}" + (f" ({self.detail})" if self.detail else "")


class Kill(enum.Enum):
    """How kill() ended a node's cgroup."""

    CGROUP_KILL = "cgroup.kill"  # one write; the kernel kills every process, forks included
    SIGNALLED = "signalled"  # SIGKILL to each pid in cgroup.procs (frozen first if possible)
    EMPTY = "empty"  # nothing was left to kill
    FAILED = "failed"  # the cgroup could not be read or written: use kill_process_group


class MemorySource(enum.Enum):
    MEMORY_CURRENT = "memory.current"
    PSS = "pss"


# ---- reading /proc/self --------------------------------------------------------------------


def cgroup2_mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(root inside the hierarchy, mount point) of every cgroup2 mount in a mountinfo text."""
    mounts = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 5 or not tail.startswith("cgroup2 "):
            continue
        mounts.append((_unescape(fields[3]), _unescape(fields[4])))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def cgroup2_path(proc_cgroup: str) -> str | None:
    """The path of the `0::` line of /proc/PID/cgroup (None on a v1-only host)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def locate(path: str, mounts: list[tuple[str, str]]) -> str | None:
    """The directory of cgroup `path` in the file system, through the mount whose root holds
    it (the deepest such root); None if none does, or the path leaves the namespace (`/..`)."""
    if not path.startswith("/") or ".." in path.split("/"):
        return None
    best: tuple[str, str] | None = None
    for root, point in mounts:
        prefix = root.rstrip("/")
        if (path == root or path.startswith(prefix + "/")) and (
                best is None or len(root) > len(best[0])):
            best = (root, point)
    if best is None:
        return None
    rest = path[len(best[0].rstrip("/")):]
    return best[1].rstrip("/") + rest if rest else best[1]


def is_delegated(directory: str) -> bool:
    """True when systemd marked this cgroup delegated (Delegate=yes): xattr user.delegate or
    trusted.delegate is "1". Without the mark it is systemd's, not ours to split."""
    for name in DELEGATE_XATTRS:
        try:
            if os.getxattr(directory, name).strip() == b"1":
                return True
        except OSError:
            continue
    return False


def discover(*, proc_self: str = "/proc/self", fs_root: str = "", move: bool = True) -> Setup:
    """Find this process's delegated cgroup v2, make `<it>/supervisor`, move this process in
    and enable the delegated controllers (of CONTROLLERS) for the node groups.

    fs_root is prepended to mount points (tests pass a fake cgroupfs); move=False finds and
    checks only. Called again after an exec (a deploy's hand-over), it finds itself already in
    `supervisor` and reuses the tree with the nodes in it."""
    try:
        mountinfo = _read(f"{proc_self}/mountinfo")
        own = cgroup2_path(_read(f"{proc_self}/cgroup"))
    except OSError as exc:
        return Setup(None, Off.NO_V2, f"{proc_self}: {exc.strerror}")
    mounts = cgroup2_mounts(mountinfo)
    if not mounts:
        return Setup(None, Off.NO_V2, "")
    if own is None:
        return Setup(None, Off.NO_V2_PATH, "")
    if own == "/":
        return Setup(None, Off.ROOT, "")
    found = locate(own, mounts)
    if found is None:
        return Setup(None, Off.OUTSIDE, own)
    base = fs_root + found
    if os.path.basename(base) == SUPERVISOR_LEAF and is_delegated(os.path.dirname(base)):
        base = os.path.dirname(base)  # moved there before an exec: the same tree
    if not is_delegated(base):
        return Setup(None, Off.NOT_DELEGATED, own)
    leaf = os.path.join(base, SUPERVISOR_LEAF)
    try:
        os.makedirs(leaf, exist_ok=True)
        if move:
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        off = {errno.EROFS: Off.READ_ONLY, errno.EACCES: Off.DENIED,
               errno.EPERM: Off.DENIED}.get(exc.errno or 0, Off.FAILED)
        return Setup(None, off, f"{leaf}: {exc.strerror}")
    return Setup(CgroupTree(base, enable_controllers(base)), None, base)


def enable_controllers(base: str, wanted: tuple[str, ...] = CONTROLLERS) -> frozenset[str]:
    """Enable those of `wanted` that are delegated to `base` for its children; returns those
    now enabled. One write per controller: one refused (EBUSY while a process is still in
    `base`, or not delegated) does not keep the others off."""
    control = os.path.join(base, "cgroup.subtree_control")
    try:
        available = _read(os.path.join(base, "cgroup.controllers")).split()
        enabled = set(_read(control).split())
    except OSError:
        return frozenset()
    for name in wanted:
        if name in available and name not in enabled:
            try:
                _write(control, f"+{name}")
                enabled.add(name)
            except OSError:
                pass
    return frozenset(enabled & set(wanted))


# ---- the tree ------------------------------------------------------------------------------


class CgroupTree:
    """The node groups under one delegated cgroup. Every method degrades: a failure returns a
    falsy value (None, False, Kill.FAILED) and sets `problem` to a line naming what failed."""

    def __init__(self, base: str, controllers: frozenset[str] = frozenset()) -> None:
        self.base = base
        self.controllers = controllers
        self.problem: str | None = None

    @property
    def memory(self) -> bool:
        """memory.current, memory.max and memory.events exist in the node groups."""
        return "memory" in self.controllers

    @property
    def cpu(self) -> bool:
        """cpu.stat has usage_usec whether or not the cpu controller is enabled; this says
        whether cpu.max/cpu.weight exist too."""
        return "cpu" in self.controllers

    def path(self, node_id: int) -> str:
        return f"{self.base}/node-{node_id}"

    def _fail(self, what: str, path: str, exc: OSError | ValueError) -> None:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.problem = f"cgroup: cannot {what} {path}: {why}"

    def create(self, node_id: int, memory_max: int | None = None) -> bool:
        """Make (or reuse) node-N, with memory.max = memory_max (None: no bound) and
        memory.oom.group = 1 where memory is delegated (an OOM kill takes the whole node, not a
        random helper of it). Not on the fork path: once per slot, and again on a reload."""
        path = self.path(node_id)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            self._fail("create", path, exc)
            return False
        if self.memory:
            if not self.set_memory_max(node_id, memory_max):
                return False
            try:
                _write(f"{path}/memory.oom.group", "1")
            except OSError as exc:
                self._fail("write", f"{path}/memory.oom.group", exc)
                return False
        return True

    def set_memory_max(self, node_id: int, limit: int | None) -> bool:
        """memory.max of node-N (None: `max`, no bound); False where memory is not delegated."""
        path = f"{self.path(node_id)}/memory.max"
        if not self.memory:
            self.problem = (f"cgroup: memory.max cannot be set: the memory controller is not "
                            f"delegated to {self.base} (limits.memory_max is not enforced)")
            return False
        try:
            _write(path, "max" if limit is None else str(limit))
        except OSError as exc:
            self._fail("write", path, exc)
            return False
        return True

    def procs_fd(self, node_id: int) -> int | None:
        """node-N's cgroup.procs opened for writing (close-on-exec), for the child to write
        b"0" into right after the fork (it moves itself), instead of the supervisor writing its
        pid. Open it once per slot; the caller owns and closes it."""
        path = f"{self.path(node_id)}/cgroup.procs"
        try:
            return os.open(path, _WRITE)
        except OSError as exc:
            self._fail("open", path, exc)
            return None

    def attach(self, node_id: int, pid: int) -> bool:
        """Move process `pid` (all its threads) into node-N."""
        path = f"{self.path(node_id)}/cgroup.procs"
        try:
            _write(path, str(pid))
        except OSError as exc:
            self._fail(f"move pid {pid} into", path, exc)
            return False
        return True

    def procs(self, node_id: int) -> list[int] | None:
        """The pids in node-N (not its descendants' groups: swarmd makes none)."""
        path = f"{self.path(node_id)}/cgroup.procs"
        try:
            return [int(pid) for pid in _read(path).split()]
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return []
            self._fail("read", path, exc)
            return None

    def kill(self, node_id: int) -> Kill:
        """SIGKILL everything in node-N, without waiting: cgroup.kill (Linux >= 5.14), else
        freeze, SIGKILL each pid, thaw. Once this returns every process that was in the group
        has SIGKILL pending, so the next generation may be moved in at once."""
        path = self.path(node_id)
        try:
            _write(f"{path}/cgroup.kill", "1")
            return Kill.CGROUP_KILL
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._fail("write", f"{path}/cgroup.kill", exc)
                return Kill.FAILED
            if not os.path.isdir(path):
                return Kill.EMPTY
        return self._kill_each(node_id)

    def _kill_each(self, node_id: int) -> Kill:
        path = self.path(node_id)
        frozen = _try_write(f"{path}/cgroup.freeze", "1")  # nothing forks or exits meanwhile
        signalled = False
        try:
            for _ in range(MAX_KILL_ROUNDS):
                pids = self.procs(node_id)
                if pids is None:
                    return Kill.FAILED
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        signalled = True
                    except ProcessLookupError:
                        pass
                if frozen:
                    break  # a frozen group cannot grow: one round got them all
        finally:
            if frozen:
                _try_write(f"{path}/cgroup.freeze", "0")  # SIGKILL ends frozen tasks too
        return Kill.SIGNALLED if signalled else Kill.EMPTY

    def populated(self, node_id: int) -> bool | None:
        """Whether any process is still in node-N (cgroup.events `populated`, which drops when
        the last one exits, before any reaping); None if it cannot be read. Never waits: poll
        it, or watch events_fd() for EPOLLPRI."""
        path = self.path(node_id)
        try:
            return _populated(_read(f"{path}/cgroup.events"))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._fail("read", f"{path}/cgroup.events", exc)
                return None
        procs = self.procs(node_id)
        return None if procs is None else bool(procs)

    def events_fd(self, node_id: int) -> int | None:
        """node-N's cgroup.events opened non-blocking: epoll reports EPOLLPRI (with EPOLLERR)
        each time it changes, e.g. `populated 1` -> `0`; read it again with read_events()."""
        path = f"{self.path(node_id)}/cgroup.events"
        try:
            return os.open(path, _READ | os.O_NONBLOCK)
        except OSError as exc:
            self._fail("open", path, exc)
            return None

    def cpu_usec(self, node_id: int) -> int | None:
        """CPU time of node-N and everything that ever ran in it (usage_usec of cpu.stat)."""
        path = f"{self.path(node_id)}/cpu.stat"
        try:
            return _stat_field(_read(path), "usage_usec")
        except (OSError, ValueError) as exc:
            self._fail("read", path, exc)
            return None

    def memory_current(self, node_id: int) -> int | None:
        """Bytes charged to node-N (memory.current); None where memory is not delegated."""
        if not self.memory:
            return None
        path = f"{self.path(node_id)}/memory.current"
        try:
            return int(_read(path))
        except (OSError, ValueError) as exc:
            self._fail("read", path, exc)
            return None

    def oom_kills(self, node_id: int) -> int | None:
        """How many processes of node-N the OOM killer took so far (memory.events `oom_kill`,
        counted since node-N was made, across generations); None where it cannot tell."""
        if not self.memory:
            return None
        path = f"{self.path(node_id)}/memory.events"
        try:
            return _stat_field(_read(path), "oom_kill")
        except (OSError, ValueError) as exc:
            self._fail("read", path, exc)
            return None

    def remove(self, node_id: int) -> bool:
        """rmdir node-N (a slot scaled away); fails with EBUSY while processes are in it."""
        path = self.path(node_id)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._fail("remove", path, exc)
            return False
        return True


def read_events(fd: int) -> bool | None:
    """`populated` from an events_fd() (re-read from offset 0); None if unreadable."""
    try:
        return _populated(os.pread(fd, 256, 0).decode())
    except (OSError, UnicodeDecodeError):
        return None


def oom_killed(exit_signal: int | None, oom_kills_at_start: int | None,
               oom_kills_now: int | None, *, killed_by_swarmd: bool = False) -> bool | None:
    """Whether a node that ended was taken by the kernel's OOM killer: it died of SIGKILL that
    swarmd did not send, and its cgroup's oom_kill count rose since it started. None when
    memory.events is not there to tell (the entry then says "killed by SIGKILL")."""
    if exit_signal != signal.SIGKILL or killed_by_swarmd:
        return False
    if oom_kills_at_start is None or oom_kills_now is None:
        return None
    return oom_kills_now > oom_kills_at_start


# ---- the process group, where there is no cgroup --------------------------------------------


def kill_process_group(pgid: int) -> bool:
    """SIGKILL to a node's own process group (nodes call setpgid(0, 0): pgid = the node's pid).
    Call it before reaping the node: its zombie keeps the group id from being reused. It misses
    what left the group (setsid, a double-forked daemon): only a cgroup catches those.
    Returns whether any process was there to signal."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def process_group_empty(pgid: int) -> bool:
    """True once no process is left in the group. A zombie leader counts as still there, so
    ask after reaping the node."""
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:  # a member changed its uid: still there, not ours to signal
        return False


# ---- small file helpers: os-level, no file objects (this runs on the kill path) ------------


def _read(path: str) -> str:
    fd = os.open(path, _READ)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    fd = os.open(path, _WRITE)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _try_write(path: str, text: str) -> bool:
    try:
        _write(path, text)
        return True
    except OSError:
        return False


def _populated(events: str) -> bool | None:
    for line in events.splitlines():
        if line.startswith("populated "):
            return line.split()[1] != "0"
    return None


def _stat_field(text: str, name: str) -> int:
    """The value of `name` in a flat-keyed file like cpu.stat or memory.events."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    raise ValueError(f"no {name} in it")
