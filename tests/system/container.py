"""A throwaway container with a real systemd as PID 1, for swarmd's system tests.

The recipe (see DESIGN.md, "Tests, three layers", item 3)::

    unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run; exec systemd-nspawn \\
        --quiet --volatile=yes -D / --register=no --keep-unit --machine=NAME \\
        --bind-ro=/repo ... -b systemd.firstboot=off'
    nsenter -t <container PID 1> -a systemctl ...

``--volatile=yes -D /`` gives the container a tmpfs root that shows the host's ``/usr`` and
nothing else; everything a test needs from the host (repo, venv, Python prefix) is bound
read-only at its own path. ``/etc``, ``/var`` and ``/run`` start empty: systemd populates
``/etc`` from presets at first boot, so units shipped in the host's ``/usr`` that presets
enable (e.g. timers, postgresql) start in the container too; ``/etc/passwd`` only has the users
``systemd-sysusers`` creates; the journal is volatile (``/run/log/journal``).

Host quirks handled here (Debian 12 under a non-systemd PID 1, cgroup *hybrid* layout: v1
controllers, a ``name=systemd`` v1 hierarchy and a controller-less v2 at
``/sys/fs/cgroup/unified``):

* Without a host systemd, ``--keep-unit`` makes nspawn split *its own* cgroup into
  ``supervisor/`` and ``payload/`` subgroups. Started from the root cgroup these are
  ``/supervisor`` and ``/payload``: shared by concurrent containers and never removed. So the
  wrapper shell first moves itself into ``/<machine>`` of every writable systemd hierarchy;
  :meth:`Container.stop` removes that tree again.
* The host's ``/run`` is on the root file system: the tmpfs on ``/run`` lives in a private mount
  namespace (``unshare -m``) so nspawn's runtime files never touch the host and vanish with it.
* ``nsenter -a`` inherits the caller's environment (pyenv shims on ``PATH``, ...): commands run
  inside get a fixed, minimal one. Processes entered this way sit in a cgroup *outside* the
  container's tree (``/proc/self/cgroup`` shows ``/..``); that's fine for ``systemctl`` and
  ``journalctl``, but anything long-lived must be started through ``systemd-run`` or a unit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tests.waiting import wait_for

__all__ = [
    "Container",
    "ContainerCommandError",
    "ContainerError",
    "JournalEntry",
    "decode_journal_json",
    "exec_python",
    "preflight",
    "wait_for",
]


#: One journal entry as ``journalctl -o json`` gives it; multi-valued fields become lists.
JournalEntry = dict[str, "str | list[str]"]

#: Environment for every command run inside the container, and for nspawn itself.
CONTAINER_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

UNIT_DIR = "/run/systemd/system"
CGROUP_ROOT = Path("/sys/fs/cgroup")
POLL_INTERVAL = 0.05

# Runs as: sh -c SCRIPT sh CGROUP_PROCS_FILE... -- NSPAWN_ARGV...
# (inside `unshare -m --propagation private`, so the tmpfs on /run is ours alone).
_WRAPPER = """\
set -e
while [ "$1" != "--" ]; do echo $$ > "$1"; shift; done
shift
mount -t tmpfs -o mode=0755 tmpfs /run
exec "$@"
"""


class ContainerError(RuntimeError):
    """The container could not be booted, reached or torn down."""


class ContainerCommandError(subprocess.CalledProcessError):
    """A command inside the container failed; unlike its base class, says what it printed."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}\n--- stdout ---\n{self.stdout or ''}"
            f"--- stderr ---\n{self.stderr or ''}"
        )


def preflight() -> list[str]:
    """Return the reasons this host cannot run the container (empty if it can), with fixes."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            "not running as root: systemd-nspawn needs root to create namespaces and cgroups; "
            "run the system tests as root (e.g. `sudo .venv/bin/python -m pytest tests/system`)"
        )
    if shutil.which("systemd-nspawn") is None:
        problems.append("systemd-nspawn not found: `apt-get install systemd-container`")
    for tool in ("nsenter", "unshare"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found: `apt-get install util-linux`")
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        problems.append("no systemd binary in /usr/lib/systemd: `apt-get install systemd`")
    if os.geteuid() == 0 and not _cgroup_hierarchies():
        problems.append(
            "no writable systemd cgroup hierarchy under /sys/fs/cgroup (want cgroup2 there, or "
            "/sys/fs/cgroup/systemd + /sys/fs/cgroup/unified): mount cgroup2 on /sys/fs/cgroup"
        )
    return problems


def exec_python(python: str, script: str) -> str:
    """Return an ``ExecStart=`` value running ``python -c script``; ``script`` may span lines.

    The script is put in one double-quoted word with C escapes, which systemd unescapes; ``%``
    (specifiers) and ``$`` (variable expansion) are doubled so they reach Python unchanged.
    """
    escaped = (
        script.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("%", "%%")
        .replace("$", "$$")
    )
    return f'{python} -c "{escaped}"'


def decode_journal_json(line: str) -> JournalEntry:
    """Parse one line of ``journalctl -o json``.

    journalctl prints a field that is not printable UTF-8 as an array of byte values, and a field
    that occurs several times as an array of such values. Byte arrays are decoded as UTF-8 with
    ``surrogateescape`` (lossless: ``value.encode("utf-8", "surrogateescape")`` gives the bytes
    back); a repeated field becomes a list of strings. A field too big to print (``null``,
    only without ``--all``, which :meth:`Container.journal` passes) becomes ``""``.
    """
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError(f"journal line is not a JSON object: {line[:200]!r}")
    return {key: _journal_value(value) for key, value in raw.items()}


def _journal_value(value: object) -> str | list[str]:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return bytes(value).decode("utf-8", "surrogateescape")
        return [_journal_scalar(v) for v in value]
    raise ValueError(f"unexpected journal field value {value!r}")


def _journal_scalar(value: object) -> str:
    decoded = _journal_value(value)
    if isinstance(decoded, list):
        raise ValueError(f"nested journal field value {value!r}")
    return decoded


def _cgroup_hierarchies() -> list[Path]:
    """The hierarchies nspawn splits its own cgroup in: cgroup2 root, or name=systemd + v2."""
    if (CGROUP_ROOT / "cgroup.procs").exists():  # pure cgroup v2 (unified)
        return [CGROUP_ROOT]
    found = [CGROUP_ROOT / name for name in ("systemd", "unified")]
    return [p for p in found if (p / "cgroup.procs").exists() and os.access(p, os.W_OK)]


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(comm, ppid) of ``pid``, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = stat.rpartition(")")
    return head.partition("(")[2], int(tail.split()[1])


def _is_namespace_init(pid: int) -> bool:
    """True if ``pid`` is PID 1 of its own (nested) PID namespace."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return len(ids) > 1 and ids[-1] == "1"
    return False


class Container:
    """A booted systemd-nspawn container; make one with :meth:`boot`, end it with :meth:`stop`.

    Attributes: ``machine`` (unique name, also the container's hostname), ``pid`` (the
    container's PID 1, i.e. its systemd, as the host sees it), ``root`` (``/proc/<pid>/root``),
    ``log_path`` (nspawn's stdout/stderr: the boot console), ``boot_seconds`` (from spawning
    nspawn until ``is-system-running`` said running/degraded) and ``boot_state`` (which of the
    two it said).
    """

    def __init__(
        self, machine: str, process: subprocess.Popen[bytes], log_path: Path, cgroups: list[Path]
    ) -> None:
        self.machine = machine
        self.log_path = log_path
        self.pid = 0
        self.boot_seconds = 0.0
        self.boot_state = ""
        self._process = process
        self._cgroups = cgroups
        self._stopped = False

    @property
    def root(self) -> Path:
        return Path(f"/proc/{self.pid}/root")

    @property
    def nspawn_pid(self) -> int:
        return self._process.pid

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def boot(
        cls,
        binds: Sequence[str],
        *,
        machine: str | None = None,
        log_path: Path | None = None,
        timeout: float = 90.0,
        kernel_args: Iterable[str] = (),
    ) -> Container:
        """Start a container with ``binds`` bound read-only at their own paths; wait until up.

        Returns once ``systemctl is-system-running`` inside says ``running`` or ``degraded``.
        Raises :class:`ContainerError` (with the reason and the tail of the console log) if the
        host can't do it, nspawn dies, or ``timeout`` seconds pass; nothing is left behind then.
        """
        problems = preflight()
        if problems:
            raise ContainerError("cannot boot a container here:\n  - " + "\n  - ".join(problems))
        machine = machine or f"swarmd-test-{secrets.token_hex(4)}"
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix=f"{machine}-")) / "console.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)

        cgroups: list[Path] = []
        for hierarchy in _cgroup_hierarchies():
            cgroups.append(hierarchy / machine)
            cgroups[-1].mkdir()
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--volatile=yes",
            "--directory=/",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            f"--machine={machine}",
            *(f"--bind-ro={os.path.abspath(b)}" for b in dict.fromkeys(binds)),
            "--boot",
            "systemd.firstboot=off",
            *kernel_args,
        ]
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _WRAPPER,
            "sh",
            *(str(cg / "cgroup.procs") for cg in cgroups),
            "--",
            *nspawn,
        ]
        started = time.monotonic()
        try:
            with open(log_path, "wb") as log:
                log.write(("$ " + " ".join(nspawn) + "\n").encode())
                log.flush()
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=CONTAINER_ENV,
                    start_new_session=True,
                )
        except BaseException:
            for cg in cgroups:
                cg.rmdir()
            raise
        container = cls(machine, process, log_path, cgroups)
        try:
            container._wait_booted(started + timeout)
        except BaseException as exc:
            try:
                container.stop()
            except ContainerError as teardown:
                raise ContainerError(f"{exc}\nTearing it down failed too: {teardown}") from exc
            raise
        container.boot_seconds = time.monotonic() - started
        return container

    def _wait_booted(self, deadline: float) -> None:
        def remaining() -> float:
            left = deadline - time.monotonic()
            if self._process.poll() is not None:
                code = self._process.returncode
                raise self._boot_error(f"systemd-nspawn (or its wrapper) exited with {code}")
            if left <= 0:
                raise self._boot_error("timed out")
            return left

        while not self.pid:
            remaining()
            self.pid = self._find_init() or 0
            if not self.pid:
                time.sleep(POLL_INTERVAL)  # ok-sleep: poll interval
        state = ""
        while True:
            left = remaining()
            with contextlib.suppress(subprocess.TimeoutExpired):
                state = self.run(
                    "systemctl", "is-system-running", check=False, timeout=min(10.0, left)
                ).stdout.strip()
            if state in ("running", "degraded"):
                self.boot_state = state
                return
            time.sleep(POLL_INTERVAL)  # ok-sleep: poll interval

    def _find_init(self) -> int | None:
        """The child of nspawn that is PID 1 of a new PID namespace and has exec'd systemd."""
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _read_stat(pid)
            if stat and stat == ("systemd", self.nspawn_pid) and _is_namespace_init(pid):
                return pid
        return None

    def _boot_error(self, why: str) -> ContainerError:
        return ContainerError(
            f"container {self.machine} did not boot: {why}.\n"
            f"Console log {self.log_path} ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the console log (nspawn and the container's console)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<cannot read: {e}>"
        return "\n".join(text.replace("\r\n", "\n").split("\n")[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Power the container off and remove every trace of it; idempotent.

        SIGTERM to nspawn makes it ask the container's systemd for a clean poweroff. If that
        takes longer than half of ``timeout``, the container's PID 1 is SIGKILLed (which kills
        its whole PID namespace; nspawn reaps it and exits), and failing that nspawn too. Then
        the per-machine cgroups are removed. The mounts die with the private mount namespace.
        Raises :class:`ContainerError` if something is still left at the end.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        leftovers: list[str] = []
        for sig, pid, wait in (
            (signal.SIGTERM, self._process.pid, timeout / 2),
            (signal.SIGKILL, self.pid, timeout / 4),
            (signal.SIGKILL, self._process.pid, max(1.0, deadline - time.monotonic())),
        ):
            if self._process.poll() is not None:
                break
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=wait)
        if self._process.poll() is None:
            leftovers.append(f"systemd-nspawn {self._process.pid} survived SIGKILL")
        for cg in self._cgroups:
            try:
                wait_for(
                    functools.partial(self._remove_cgroup, cg),
                    max(1.0, deadline - time.monotonic()),
                    f"cgroup {cg} to empty",
                )
            except AssertionError as e:
                leftovers.append(str(e))
        if leftovers:
            raise ContainerError(f"container {self.machine} left things behind: {leftovers}")

    @staticmethod
    def _remove_cgroup(cg: Path) -> bool:
        """Kill what is left in ``cg`` and remove its tree; True once it is gone."""
        if not cg.exists():
            return True
        dirs = sorted((Path(d) for d, _, _ in os.walk(cg)), key=lambda p: len(p.parts))
        for d in reversed(dirs):
            with contextlib.suppress(OSError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                d.rmdir()
        return not cg.exists()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- commands

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all its namespaces, its root, cwd ``/``).

        The environment is :data:`CONTAINER_ENV`; output is captured as text. With ``check``, a
        non-zero exit raises :class:`ContainerCommandError`, whose message includes the
        output. On timeout the whole process group (nsenter and its child inside) is killed and
        ``subprocess.TimeoutExpired`` raised.
        """
        cmd = ["nsenter", f"--target={self.pid}", "--all", "--", *argv]
        with subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CONTAINER_ENV,
            start_new_session=True,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        result = subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise ContainerCommandError(result.returncode, list(argv), stdout, stderr)
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        """``systemctl ARGS`` inside; returns its stdout."""
        return self.run("systemctl", *args, check=check, timeout=timeout).stdout

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write ``text`` to absolute ``path`` inside the container, creating parent dirs.

        Goes through ``/proc/<pid>/root``. An absolute symlink in the container would resolve
        against the *host* there, so any symlink on the way is refused. The write is atomic
        (temporary file + rename), so a reloading reader never sees half a file.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must be absolute: {path!r}")
        target = self.root / path.lstrip("/")
        current = self.root
        for part in Path(path).parts[1:-1]:
            current /= part
            if current.is_symlink():
                raise ContainerError(f"refusing to write through symlink {current}")
            current.mkdir(mode=0o755, exist_ok=True)
        if target.is_symlink():
            raise ContainerError(f"refusing to write through symlink {target}")
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(text)
            tmp.chmod(mode)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)

    def install_unit(self, name: str, text: str) -> None:
        """Write unit ``name`` (or a drop-in, e.g. ``foo.service.d/x.conf``) and daemon-reload."""
        self.write_file(f"{UNIT_DIR}/{name}", text)
        self.systemctl("daemon-reload")

    def unit_property(self, unit: str, prop: str) -> str:
        """One property of ``unit`` as ``systemctl show -p PROP --value`` prints it."""
        return self.systemctl("show", f"--property={prop}", "--value", "--", unit).rstrip("\n")

    # ---------------------------------------------------------------- journal

    def journal_cursor(self) -> str:
        """The cursor of the newest journal entry: pass it as ``since_cursor`` to see only later
        entries."""
        out = self.run("journalctl", "--quiet", "--lines=0", "--show-cursor").stdout
        for line in out.splitlines():
            if line.startswith("-- cursor: "):
                return line.removeprefix("-- cursor: ").strip()
        raise ContainerError(f"journalctl printed no cursor: {out!r}")

    def journal(
        self, *match: str, since_cursor: str | None = None, unit: str | None = None
    ) -> list[JournalEntry]:
        """Journal entries, oldest first, parsed with :func:`decode_journal_json`.

        ``match`` are journalctl matches (``FIELD=value``, ``+`` for OR); ``since_cursor`` keeps
        only entries after that cursor; ``unit`` adds ``--unit`` (the unit's own entries plus
        systemd's about it).
        """
        args = ["journalctl", "--output=json", "--all", "--no-pager"]
        if since_cursor:
            # Not --after-cursor: systemd 252 skips two *matching* entries after the cursor, so
            # with a filter the cursor's own entry (which rarely matches) eats the first hit.
            args.append(f"--cursor={since_cursor}")
        if unit:
            args.append(f"--unit={unit}")
        out = self.run(*args, *match).stdout
        entries = [decode_journal_json(line) for line in out.splitlines() if line.strip()]
        return [e for e in entries if not since_cursor or e.get("__CURSOR") != since_cursor]

    def wait_journal(
        self,
        predicate: Callable[[JournalEntry], object],
        timeout: float = 15.0,
        *,
        match: Sequence[str] = (),
        since_cursor: str | None = None,
        unit: str | None = None,
        what: str = "a matching journal entry",
    ) -> JournalEntry:
        """Poll the journal until an entry satisfies ``predicate``; return the first such one."""

        def find() -> JournalEntry | None:
            entries = self.journal(*match, since_cursor=since_cursor, unit=unit)
            return next((e for e in entries if predicate(e)), None)

        return wait_for(find, timeout, what, interval=0.1)
