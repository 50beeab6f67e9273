"""Proof that the system-test harness works on this host: boot, units, sd_notify, journal,
watchdog, teardown."""

from __future__ import annotations

import secrets
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.container import (
    Container,
    ContainerCommandError,
    decode_journal_json,
    exec_python,
    wait_for,
)

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]


def probe_unit(python: str, script: str, extra: str = "") -> str:
    """A Type=notify service running ``script`` with ``python``; fails fast if never ready."""
    return textwrap.dedent(
        """\
        [Unit]
        Description=swarmd harness probe

        [Service]
        Type=notify
        TimeoutStartSec=20
        ExecStart={exec_start}
        {extra}
        """
    ).format(exec_start=exec_python(python, textwrap.dedent(script)), extra=extra)


def test_boots_a_real_systemd_as_pid1(container: Container) -> None:
    assert container.run("cat", "/proc/1/comm").stdout == "systemd\n"
    assert container.run("hostname").stdout.strip() == container.machine
    state = container.run("systemctl", "is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded"), container.systemctl("--failed", check=False)
    env = container.run("env").stdout.splitlines()
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env
    assert not [line for line in env if line.startswith(("PYENV", "VIRTUAL_ENV"))]
    # The repo is there, read-only.
    assert container.run("test", "-f", f"{REPO}/pyproject.toml", check=False).returncode == 0
    with pytest.raises(ContainerCommandError, match="Read-only file system"):
        container.run("touch", f"{REPO}/nope")


def test_write_file_and_run(container: Container) -> None:
    container.write_file("/run/harness/hello.txt", "hi there\n", mode=0o600)
    assert container.run("cat", "/run/harness/hello.txt").stdout == "hi there\n"
    assert container.run("stat", "-c", "%a", "/run/harness/hello.txt").stdout.strip() == "600"
    assert container.run("cat", input="echoed").stdout == "echoed"
    assert container.run("false", check=False).returncode == 1


def test_notify_service_status_and_journal(container: Container, venv_python: str) -> None:
    token = secrets.token_hex(4)
    unit = f"harness-notify-{token}.service"
    # Quotes, backslashes, % and $ exercise exec_python's escaping; BIN_FIELD is not UTF-8 so
    # journalctl prints it as a byte array.
    script = f"""\
        import signal
        import sdnotify
        from systemd import journal
        journal.send(
            MESSAGE="harness says \\"hello\\" 100% $HOME",
            FOO_FIELD="foo-{token}",
            BIN_FIELD=b"\\x00\\xff bin",
        )
        sdnotify.SystemdNotifier().notify("READY=1\\nSTATUS=hello")
        signal.pause()
        """
    cursor = container.journal_cursor()
    container.install_unit(unit, probe_unit(venv_python, script))

    container.systemctl("start", unit)  # returns only once READY=1 arrived

    assert container.unit_property(unit, "ActiveState") == "active"
    assert container.unit_property(unit, "SubState") == "running"
    assert container.unit_property(unit, "StatusText") == "hello"
    entry = container.wait_journal(
        lambda e: e.get("FOO_FIELD") == f"foo-{token}",
        match=[f"FOO_FIELD=foo-{token}"],
        since_cursor=cursor,
        what=f"the journal entry with FOO_FIELD=foo-{token}",
    )
    assert entry["_SYSTEMD_UNIT"] == unit
    assert entry["MESSAGE"] == 'harness says "hello" 100% $HOME'
    bin_field = entry["BIN_FIELD"]
    assert isinstance(bin_field, str)
    assert bin_field.encode("utf-8", "surrogateescape") == b"\x00\xff bin"

    container.systemctl("stop", unit)
    assert container.unit_property(unit, "ActiveState") == "inactive"


def test_watchdog_kills_a_service_that_stops_pinging(
    container: Container, venv_python: str
) -> None:
    unit = f"harness-watchdog-{secrets.token_hex(4)}.service"
    script = """\
        import signal
        import sdnotify
        sdnotify.SystemdNotifier().notify("READY=1")
        signal.pause()
        """
    cursor = container.journal_cursor()
    container.install_unit(unit, probe_unit(venv_python, script, extra="WatchdogSec=2"))
    container.systemctl("start", unit)
    started = time.monotonic()
    assert container.unit_property(unit, "ActiveState") == "active"

    wait_for(
        lambda: container.unit_property(unit, "Result") == "watchdog",
        timeout=20,
        what=f"{unit} to fail with result 'watchdog'",
    )
    assert time.monotonic() - started > 1.0  # it was the 2 s watchdog, not an early crash
    assert container.unit_property(unit, "ActiveState") == "failed"
    container.wait_journal(
        lambda e: "Watchdog timeout" in str(e.get("MESSAGE", "")),
        unit=unit,
        since_cursor=cursor,
        what=f"systemd's watchdog timeout message for {unit}",
    )
    container.systemctl("reset-failed", unit)


def test_second_container_boots_alongside_and_leaves_nothing_behind(
    container: Container, make_container: Callable[[], Container]
) -> None:
    other = make_container()
    assert other.machine != container.machine
    assert other.run("hostname").stdout.strip() == other.machine
    nspawn_pid, init_pid = other.nspawn_pid, other.pid
    cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*/{other.machine}")]
    cgroups += [p for p in [Path("/sys/fs/cgroup") / other.machine] if p.exists()]
    assert cgroups, "the per-machine cgroup should exist while it runs"

    other.stop()

    assert not Path(f"/proc/{nspawn_pid}").exists()
    assert not Path(f"/proc/{init_pid}").exists()
    assert not [p for p in cgroups if p.exists()]
    assert other.machine not in Path("/proc/self/mountinfo").read_text()
    # The module's container is unharmed.
    assert container.run("systemctl", "is-system-running", check=False).stdout.strip() in (
        "running",
        "degraded",
    )


def test_stop_kills_a_container_that_wont_power_off(
    make_container: Callable[[], Container],
) -> None:
    wedged = make_container()
    wedged.install_unit(
        "harness-wedge.service",
        "[Service]\nExecStart=sleep infinity\nExecStop=sleep infinity\nTimeoutStopSec=infinity\n",
    )
    wedged.systemctl("start", "harness-wedge.service")
    nspawn_pid, init_pid = wedged.nspawn_pid, wedged.pid

    wedged.stop(timeout=6)  # poweroff hangs on the unit: after 3 s PID 1 gets SIGKILL

    assert not Path(f"/proc/{nspawn_pid}").exists()
    assert not Path(f"/proc/{init_pid}").exists()  # reaped by nspawn, not left to the host
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{wedged.machine}"))


def test_wait_for_names_what_it_waited_for() -> None:
    assert wait_for(lambda: 42, timeout=1, what="the answer") == 42
    with pytest.raises(AssertionError, match="waiting for the impossible"):
        wait_for(lambda: False, timeout=0.2, what="the impossible")


def test_decode_journal_json_byte_arrays_and_repeated_fields() -> None:
    entry = decode_journal_json(
        '{"MESSAGE": [104, 105, 255], "TAG": ["a", [98, 10]], "BIG": null, "X": "y"}'
    )
    assert entry == {"MESSAGE": "hi\udcff", "TAG": ["a", "b\n"], "BIG": "", "X": "y"}
