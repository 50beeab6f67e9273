"""The shipped swarmd units, installed in a test container, and ways to look at them.

The units under test are the real files of ``swarmd/share/`` with one change: their
``/usr/local/bin/swarmd`` becomes ``python -m swarmd`` of this checkout, bound read-only at
/opt/swarmd in the container. A drop-in adds what only the tests need: ``PYTHONPATH`` for
the package and the test apps in ``tests/apps``. Nothing of the sandbox is relaxed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from swarmd.systemd.events import KINDS
from tests.system.container import Container, JournalEntry, wait_for

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "swarmd" / "share"
SHIPPED_SWARMD = "/usr/local/bin/swarmd"
SWARMD = str(Path(sys.prefix) / "bin" / "swarmd")  # the venv's, for root inside the container

# Where the service sees this checkout and its venv. The checkout may live anywhere (/root,
# /home, /tmp), all of which the shipped sandbox hides (ProtectHome, PrivateTmp) or a transient
# user cannot enter, so the container binds it again at an installed-looking path, like an
# operator's /opt/swarmd. PYTHONPATH puts that copy of the package ahead of the venv's
# editable-install finder, which would name the original path.
INSTALLED = Path("/opt/swarmd")
INSTALLED_VENV = Path("/opt/swarmd-venv")
SERVICE_PYTHON = (INSTALLED / Path(sys.prefix).relative_to(REPO)
                  if REPO in Path(sys.prefix).parents else INSTALLED_VENV) / "bin" / "python"
SERVICE_SWARMD = f"{SERVICE_PYTHON} -m swarmd"
APPS = INSTALLED / "tests" / "apps"

TEST_DROPIN = f"""\
# Test only: this checkout's package and its test apps (tests/apps), importable by the
# supervisor and its nodes.
[Service]
Environment=PYTHONPATH={INSTALLED}:{APPS}
"""


def service_binds() -> list[str]:
    """nspawn binds (SRC:DST) that show the checkout and venv at their installed paths."""
    binds = [f"{REPO}:{INSTALLED}"]
    if REPO not in Path(sys.prefix).parents:
        binds.append(f"{Path(sys.prefix)}:{INSTALLED_VENV}")
    return binds

#: Short timeouts, so that every failure path of a test finishes in seconds.
BASE_CONFIG: dict[str, Any] = {
    "nodes": 3,
    "app": "swarmd_testapps:steady",
    "env": {"TESTAPP_PERIOD": "0.2"},
    "timeouts": {"boot": "5s", "report": "3s", "shutdown": "3s", "drain": "3s"},
    "restart": {"delay": "200ms", "max_delay": "1s", "reset_after": "5s", "give_up_after": 0},
}


def unit_for_tests(name: str) -> str:
    """The shipped unit ``name`` with ExecStart/ExecReload pointing at this checkout."""
    text = (PACKAGING / name).read_text()
    assert text.count(f"={SHIPPED_SWARMD} ") == 2, f"{name}: ExecStart/ExecReload moved?"
    return text.replace(f"={SHIPPED_SWARMD} ", f"={SERVICE_SWARMD} ")


def install_units(container: Container) -> None:
    """swarmd.service and swarmd@.service, each with the test drop-in; one daemon-reload."""
    for name in ("swarmd.service", "swarmd@.service"):
        container.write_file(f"/run/systemd/system/{name}", unit_for_tests(name))
        container.write_file(f"/run/systemd/system/{name}.d/50-tests.conf", TEST_DROPIN)
    container.systemctl("daemon-reload")


def install_catalog(container: Container) -> str:
    """Install swarmd.catalog as an operator would (a file in /usr/lib/systemd/catalog, then
    ``journalctl --update-catalog``); returns what --update-catalog printed.

    /usr is the host's, read-only, so a tmpfs copy of that directory (systemd's own catalogs
    plus ours) is bound over it inside the container first.
    """
    staging = "/run/swarmd-test-catalog"
    container.run("mkdir", "-p", staging)
    container.run("sh", "-c", f"cp /usr/lib/systemd/catalog/*.catalog {staging}/")
    container.run("cp", str(PACKAGING / "swarmd.catalog"), f"{staging}/")
    container.run("mount", "--bind", staging, "/usr/lib/systemd/catalog")
    done = container.run("journalctl", "--update-catalog")
    return done.stdout + done.stderr


def security_exposure(output: str, unit: str) -> float:
    """The number in ``Overall exposure level for UNIT: 1.2 OK``."""
    for line in output.splitlines():
        if "Overall exposure level for" in line:
            return float(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no overall exposure for {unit} in:\n{output}")


class Swarmd:
    """One swarmd unit (``swarmd.service`` or ``swarmd@NAME.service``) in a container."""

    def __init__(self, container: Container, instance: str | None = None) -> None:
        self.c = container
        self.instance = instance
        self.unit = f"swarmd@{instance}.service" if instance else "swarmd.service"
        self.config_path = f"/etc/swarmd/{instance}.yaml" if instance else "/etc/swarmd.yaml"
        self.cursor = container.journal_cursor()

    # ---- config and lifecycle

    def write_config(self, config: dict[str, Any] | None = None, *, raw: str | None = None,
                     **changes: Any) -> None:
        """BASE_CONFIG updated with ``config`` and ``changes`` (top-level keys; None drops
        a key), or ``raw``."""
        if raw is None:
            data = {**BASE_CONFIG, **(config or {}), **changes}
            data = {key: value for key, value in data.items() if value is not None}
            raw = yaml.safe_dump(data, sort_keys=False)
        self.c.write_file(self.config_path, raw, mode=0o644)

    def start(self, config: dict[str, Any] | None = None, **changes: Any) -> float:
        """Write the config, then ``systemctl start``; returns how long the start took."""
        self.write_config(config, **changes)
        self.cursor = self.c.journal_cursor()
        started = time.monotonic()
        self.c.systemctl("start", self.unit)
        return time.monotonic() - started

    def stop(self) -> None:
        self.c.systemctl("stop", self.unit)

    def reset(self) -> None:
        """Stopped and not failed: the state the next test starts from."""
        self.c.systemctl("stop", self.unit, check=False)
        self.c.systemctl("reset-failed", self.unit, check=False)

    def prop(self, name: str) -> str:
        return self.c.unit_property(self.unit, name)

    def main_pid(self) -> int:
        return int(self.prop("MainPID"))

    # ---- the control socket, through the real CLI

    def cli(self, *args: str, check: bool = True, timeout: float = 30.0) -> Any:
        instance = ("-i", self.instance) if self.instance else ()
        return self.c.run(SWARMD, *args, *instance, check=check, timeout=timeout)

    def status(self) -> dict[str, Any]:
        """``swarmd status --json`` inside the container."""
        return json.loads(self.cli("status", "--json").stdout)

    def nodes(self) -> dict[int, dict[str, Any]]:
        return {node["id"]: node for node in self.status()["nodes"]}

    def wait_healthy(self, count: int, timeout: float = 15.0) -> dict[int, dict[str, Any]]:
        """Until ``count`` nodes run and last reported healthy; returns them by id."""

        def healthy() -> dict[int, dict[str, Any]] | None:
            nodes = self.nodes()
            ok = [n for n in nodes.values() if n["state"] == "running" and n["code"] == 0]
            return nodes if len(ok) == count == len(nodes) else None

        return wait_for(healthy, timeout, f"{count} healthy nodes in {self.unit}")

    # ---- the journal

    def journal(self, *match: str, since: str | None = None) -> list[JournalEntry]:
        """Entries of this unit (``journalctl -u UNIT MATCH...``) since the last start."""
        return self.c.journal(*match, since_cursor=since or self.cursor, unit=self.unit)

    def events(self, kind: str, *match: str) -> list[JournalEntry]:
        assert kind in KINDS, kind
        return self.journal(f"SWARMD_EVENT={kind}", *match)

    def wait_entries(self, what: str, predicate: Any, count: int = 1, *match: str,
                     timeout: float = 15.0) -> list[JournalEntry]:
        """Until at least ``count`` entries (filtered by ``match``) satisfy ``predicate``."""

        def found() -> list[JournalEntry] | None:
            hits = [e for e in self.journal(*match) if predicate(e)]
            return hits if len(hits) >= count else None

        return wait_for(found, timeout, what, interval=0.1)

    def wait_event(self, kind: str, *match: str, count: int = 1,
                   timeout: float = 15.0) -> list[JournalEntry]:
        assert kind in KINDS, kind
        return self.wait_entries(f"{count} x {kind} {' '.join(match)} in {self.unit}",
                                 lambda e: True, count, f"SWARMD_EVENT={kind}", *match,
                                 timeout=timeout)

    def wait_message(self, text: str, *match: str, timeout: float = 15.0) -> JournalEntry:
        return self.wait_entries(f"an entry saying {text!r} in {self.unit}",
                                 lambda e: text in str(e.get("MESSAGE", "")), 1, *match,
                                 timeout=timeout)[0]


def field(entry: JournalEntry, name: str) -> str:
    """A single-valued field (journal fields can repeat; ours must not)."""
    value = entry.get(name)
    assert isinstance(value, str), f"{name} = {value!r} in {entry.get('MESSAGE')!r}"
    return value
