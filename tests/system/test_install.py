"""Installing as an operator would, in a real systemd: a fresh venv made from Debian's python3
(not the repo's), `pip install` of the project (from wheels built on the host: the container
has no certificates for the registry), `swarmd install --name X`, `systemctl start X`, the
catalog in `journalctl -u X -x`, an upgrade (reinstall) that keeps the edited config, and
`swarmd uninstall`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.container import Container, wait_for

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "build" / "wheelhouse"  # inside the checkout: the container sees it
VENV = "/opt/app-venv"
NAME = "orders"


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """swarmd's wheel and its dependencies', built on the host (which reaches the registry)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    for old in WHEELHOUSE.glob("swarmd-*.whl"):
        old.unlink()
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                           str(WHEELHOUSE), str(REPO)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # a clean build: no deprecation of the build backend (this host's pip config may warn
    # about its own index locations: not ours)
    assert "deprecat" not in done.stderr.lower(), done.stderr
    return WHEELHOUSE


def swarmd(c: Container, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return c.run(f"{VENV}/bin/swarmd", *args, check=check, timeout=60)


def test_pip_install_then_swarmd_install_gives_a_running_fleet(container: Container,
                                                                wheelhouse: Path) -> None:
    c = container
    # /usr is the host's, read-only: a writable /usr/local/lib for the catalog, as on a host
    c.run("mount", "-t", "tmpfs", "tmpfs", "/usr/local/lib")
    c.run("/usr/bin/python3", "-m", "venv", VENV, timeout=120)
    c.run(f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links",
          str(wheelhouse), "swarmd", timeout=300)
    tools = c.run(f"{VENV}/bin/pip", "list", "--format=json").stdout
    assert {p["name"].lower() for p in json.loads(tools)}.isdisjoint({"pytest", "ruff"})

    said = swarmd(c, "install", "--name", NAME).stdout
    assert f"wrote /etc/systemd/system/{NAME}.service (runs {VENV}/bin/swarmd run -c " \
           f"/etc/swarmd/{NAME}.yaml)" in said, said
    assert f"systemctl enable --now {NAME}" in said
    c.run(f"{VENV}/bin/swarmd", "check", "-c", f"/etc/swarmd/{NAME}.yaml")
    c.systemctl("enable", "--now", f"{NAME}.service")
    status = wait_for(lambda: (out := swarmd(c, "status", "-i", NAME, "--json", check=False))
                      .returncode == 0 and json.loads(out.stdout), 30, "the fleet's status")
    assert status["config"] == f"/etc/swarmd/{NAME}.yaml"
    wait_for(lambda: c.unit_property(f"{NAME}.service", "StatusText").startswith("4/4 healthy"),
             30, "4 healthy demo nodes")
    # the catalog explains the supervisor's entries (-x)
    explained = c.run("journalctl", "-u", NAME, "-x", "--no-pager", "SWARMD_EVENT=swarmd.ready",
                      "SWARMD_FLEET=" + NAME).stdout
    assert "Subject: swarmd is ready" in explained, explained

    # an upgrade: the operator's edit survives a reinstall
    c.write_file(f"/etc/swarmd/{NAME}.yaml", "app: swarmd.demo:run\nnodes: 2\n")
    said = swarmd(c, "install", "--name", NAME).stdout
    assert f"kept /etc/swarmd/{NAME}.yaml as it is" in said
    c.systemctl("restart", f"{NAME}.service")
    wait_for(lambda: c.unit_property(f"{NAME}.service", "StatusText").startswith("2/2 healthy"),
             30, "the edited config's 2 nodes")

    refused = swarmd(c, "uninstall", "--name", NAME, check=False)
    assert refused.returncode == 1 and "systemctl disable --now" in refused.stderr
    c.systemctl("disable", "--now", f"{NAME}.service")
    said = swarmd(c, "uninstall", "--name", NAME).stdout
    assert f"removed /etc/systemd/system/{NAME}.service" in said
    assert c.run("test", "-e", f"/etc/systemd/system/{NAME}.service",
                 check=False).returncode == 1
    assert c.run("test", "-e", f"/etc/swarmd/{NAME}.yaml", check=False).returncode == 0
    assert c.unit_property(f"{NAME}.service", "LoadState") == "not-found"
