"""An app whose code a test rewrites between deploys, and what each node says it runs.

Each node writes "<VERSION> <pid>" to $DEPLOY_STATE/<node id> when it starts, so a test can tell
which code every running node was forked with (preload) or imported (no preload).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.process.harness import REPO, Swarm, base_config

TEMPLATE = """\
import os
VERSION = {version}
{at_import}

def run(node):
    path = os.path.join(os.environ["DEPLOY_STATE"], str(node.id))
    with open(path + ".tmp", "w") as handle:
        handle.write(f"{{VERSION}} {{os.getpid()}}")
    os.replace(path + ".tmp", path)
{in_run}
    while not node.stopping.is_set() and not node.quieting.is_set():
        node.healthy()
        node.stopping.wait(0.1)
"""


class DeployedApp:
    """deployed_app.py in a directory of its own, and the state directory its nodes write."""

    def __init__(self, tmp: Path) -> None:
        self.code = tmp / "code"
        self.code.mkdir(exist_ok=True)
        self.state = tmp / "state"
        self.state.mkdir(exist_ok=True)
        self.module = self.code / "deployed_app.py"
        self.writes = 0

    def write(self, version: int, at_import: str = "", in_run: str = "") -> None:
        """The module as version `version`; `at_import` runs at import, `in_run` (indented)
        at the start of run(). Each write gets a later mtime: Python trusts a cached .pyc
        whose source has the same size and whole-second mtime."""
        body = "\n".join("    " + line for line in in_run.splitlines())
        self.module.write_text(TEMPLATE.format(version=version, at_import=at_import,
                                               in_run=body))
        self.writes += 1
        mtime = self.module.stat().st_mtime + 2 * self.writes
        os.utime(self.module, (mtime, mtime))

    def env(self) -> dict[str, str]:
        """The supervisor's environment: the app's directory on its path."""
        return {"PYTHONPATH": os.pathsep.join([str(self.code), str(REPO / "tests" / "apps"),
                                               str(REPO)])}

    def config(self, **overrides: Any) -> dict[str, Any]:
        env = {"DEPLOY_STATE": str(self.state), **overrides.pop("env", {})}
        return base_config(app="deployed_app:run", env=env, **overrides)

    def versions(self, swarm: Swarm) -> dict[int, int]:
        """node id -> the version its running process wrote (-1: not written by it)."""
        out = {}
        for node_id, node in swarm.nodes().items():
            try:
                version, pid = (self.state / str(node_id)).read_text().split()
            except (FileNotFoundError, ValueError):
                out[node_id] = -1
                continue
            out[node_id] = int(version) if int(pid) == node["pid"] else -1
        return out
