"""Who may talk to the control socket: root and the service's user ask anything; a member of
adm or systemd-journal (who may read the fleet's journal anyway) may read its status, never
change it; anyone else is refused, with a message that says who may."""

from __future__ import annotations

import grp
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
def test_status_is_open_to_journal_readers_and_changes_are_not(swarm, runtime: Path) -> None:
    s = swarm(base_config(nodes=2), runtime=runtime)
    s.wait_ready()
    adm = grp.getgrnam("adm").gr_gid
    as_reader = swarmd(runtime, "status", "--json", groups=[adm])
    assert as_reader.returncode == 0, as_reader.stderr
    assert len(json.loads(as_reader.stdout)["nodes"]) == 2
    for command in (["reload"], ["quiet"], ["scale", "3"]):
        refused = swarmd(runtime, *command, groups=[adm])
        assert refused.returncode == 1, command
        assert "permission denied: only root or the service's user may change the fleet" \
            in refused.stderr, refused.stderr
    stranger = swarmd(runtime, "status", groups=[])
    assert stranger.returncode != 0
    assert "permission denied: swarmd status needs root, the service's user, or a member of " \
           "group adm or systemd-journal" in stranger.stderr, stranger.stderr
    assert s.status()["mode"] == "running" and sorted(s.nodes()) == [0, 1]  # nothing changed
    assert swarmd(runtime, "scale", "3").returncode == 0  # root may
