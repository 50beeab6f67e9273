"""Deploys under the real unit: `systemctl reload` puts new code into every node, the main PID
stays, and a deploy whose new nodes fail is rolled back with the unit active."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.system.container import Container
from tests.system.swarmd_service import INSTALLED, Swarmd, field

pytestmark = pytest.mark.system

APPS = "/srv/swarmd-apps"  # the operator's code, readable by the service's transient user
DROPIN = "swarmd.service.d/60-deployed-app.conf"
TEMPLATE = """\
import os
VERSION = {version}

def run(node):
    node.log.info("version %d in pid %d", VERSION, os.getpid())
{in_run}
    while not node.stopping.is_set() and not node.quieting.is_set():
        node.healthy()
        node.stopping.wait(0.2)
"""


def write_app(c: Container, version: int, in_run: str = "") -> None:
    body = "\n".join("    " + line for line in in_run.splitlines())
    c.write_file(f"{APPS}/deployed_app.py", TEMPLATE.format(version=version, in_run=body))
    # a later mtime than any .pyc of the version before (whole seconds are compared)
    c.run("touch", "-d", f"@{int(time.time()) + 2 * version}", f"{APPS}/deployed_app.py")


@pytest.fixture
def deploying(swarmd: Swarmd) -> Iterator[Swarmd]:
    """The unit, with the operator's app directory on the supervisor's path."""
    c = swarmd.c
    c.install_unit(DROPIN, f"[Service]\nEnvironment=PYTHONPATH={INSTALLED}:{APPS}\n")
    try:
        yield swarmd
    finally:
        swarmd.reset()
        c.run("rm", f"/run/systemd/system/{DROPIN}")
        c.systemctl("daemon-reload")


def versions(swarmd: Swarmd) -> dict[int, int]:
    """node id -> the version its running process logged."""
    out = {}
    for node_id, node in swarmd.nodes().items():
        entries = swarmd.journal(f"_PID={node['pid']}")
        said = [field(e, "MESSAGE") for e in entries if "version" in field(e, "MESSAGE")]
        out[node_id] = int(said[-1].split()[1]) if said else -1
    return out


def test_systemctl_reload_deploys_new_code_into_every_node_same_main_pid(
        deploying: Swarmd) -> None:
    swarmd, c = deploying, deploying.c
    write_app(c, 1)
    swarmd.start(nodes=3, app="deployed_app:run")
    swarmd.wait_healthy(3)
    main_pid = swarmd.main_pid()
    assert swarmd.wait_entries("every node on version 1",
                               lambda e: "version 1 in pid" in field(e, "MESSAGE"), 3)
    write_app(c, 2)

    c.systemctl("reload", swarmd.unit)

    assert swarmd.main_pid() == main_pid  # the same process, re-executed into the new code
    assert swarmd.prop("ActiveState") == "active"
    assert versions(swarmd) == {0: 2, 1: 2, 2: 2}
    assert swarmd.status()["deploy"]["result"] == "deployed"
    reloaded = swarmd.wait_event("swarmd.reloaded")[0]
    assert int(field(reloaded, "_PID")) == main_pid
    assert field(reloaded, "MESSAGE") == "reloaded: 3 node(s) replaced"


def test_a_rolled_back_deploy_fails_systemctl_reload_and_the_unit_stays_active(
        deploying: Swarmd) -> None:
    swarmd, c = deploying, deploying.c
    write_app(c, 1)
    swarmd.start(nodes=3, app="deployed_app:run")
    swarmd.wait_healthy(3)
    main_pid = swarmd.main_pid()
    write_app(c, 2, in_run="if node.id == 1:\n    raise RuntimeError('version 2 is broken')")

    result = c.run("systemctl", "reload", swarmd.unit, check=False)

    assert result.returncode != 0
    assert swarmd.prop("ActiveState") == "active"
    assert swarmd.main_pid() == main_pid
    nodes = swarmd.wait_healthy(3)
    assert versions(swarmd) == {0: 1, 1: 1, 2: 1}, nodes
    failed = swarmd.wait_event("swarmd.deploy_failed")[0]
    assert field(failed, "PRIORITY") == "3"
    assert field(failed, "MESSAGE").startswith("deploy rolled back: slot 1: the new node exited "
                                               "with status 1 before its first report")
    deploy = swarmd.status()["deploy"]
    assert deploy["result"] == "rolled back" and deploy["reason"].startswith("slot 1:")
