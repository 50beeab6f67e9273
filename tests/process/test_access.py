"""Who may talk to the control socket: root and the service's user ask anything; any other
local user may read the status (as `systemctl status` shows everyone the same), never change
the fleet, and is told so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.process.harness import APPS, REPO, base_config

NOBODY = 65534


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A runtime directory other users can enter (pytest's tmp dirs are root's only)."""
    directory = Path(tempfile.mkdtemp(prefix="swarmd-access-"))
    os.chmod(directory, 0o755)
    yield directory / "run"


def as_user(groups: list[int]) -> Callable[[], None]:
    def become() -> None:
        os.setgroups(groups)
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return become


def swarmd(runtime: Path, *args: str, groups: list[int] | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO}:{APPS}"}
    return subprocess.run([sys.executable, "-m", "swarmd", *args, "--runtime-dir",
                           str(runtime)], capture_output=True, text=True, timeout=30, env=env,
                          cwd="/", preexec_fn=as_user(groups) if groups is not None else None)


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user needs root")
def test_status_is_every_users_and_changes_are_root_s(swarm, runtime: Path) -> None:
    s = swarm(base_config(nodes=2), runtime=runtime)
    s.wait_ready()
    as_user = swarmd(runtime, "status", "--json", groups=[])
    assert as_user.returncode == 0, as_user.stderr
    assert len(json.loads(as_user.stdout)["nodes"]) == 2
    for command in (["reload"], ["quiet"], ["scale", "3"]):
        refused = swarmd(runtime, *command, groups=[])
        assert refused.returncode == 1, command
        assert "permission denied: only root or the service's user may change the fleet" \
            in refused.stderr, refused.stderr
    assert s.status()["mode"] == "running" and sorted(s.nodes()) == [0, 1]  # nothing changed
    assert swarmd(runtime, "scale", "3").returncode == 0  # root may
