"""The sandbox of the shipped units: `systemd-analyze security` rates them 2.0 or lower, and a
node under that sandbox still talks TCP (while what it must not do fails)."""

from __future__ import annotations

import textwrap

import pytest

from tests.system.container import Container, exec_python, wait_for
from tests.system.swarmd_service import (
    PACKAGING,
    Swarmd,
    field,
    security_exposure,
)

pytestmark = pytest.mark.system

MAX_EXPOSURE = 2.0
LINE_SERVER = "swarmd-test-line-server.service"


@pytest.mark.parametrize("name", ["swarmd.service", "swarmd@.service"])
def test_shipped_unit_files_rate_2_or_lower(units: Container, name: str) -> None:
    # The files exactly as shipped, judged offline by the container's systemd-analyze.
    units.write_file(f"/run/shipped/{name}", (PACKAGING / name).read_text())
    out = units.run("systemd-analyze", "security", "--offline=yes", "--no-pager",
                    f"/run/shipped/{name}").stdout
    assert security_exposure(out, name) <= MAX_EXPOSURE, out


@pytest.mark.parametrize("unit", ["swarmd.service", "swarmd@fleet.service"])
def test_loaded_units_rate_2_or_lower_and_keep_the_network(units: Container, unit: str) -> None:
    # As the container's systemd loaded them (shipped file + the tests' drop-in).
    out = units.run("systemd-analyze", "security", "--no-pager", unit).stdout
    assert security_exposure(out, unit) <= MAX_EXPOSURE, out
    verdicts = {line.split()[1]: line.split()[0] for line in out.splitlines()
                if line[:1] in ("✓", "✗")}
    assert verdicts["PrivateNetwork="] == "✗", out  # nodes are network workers
    assert verdicts["User=/DynamicUser="] == "✓", out
    families = units.unit_property(unit, "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]


def start_line_server(container: Container, python: str) -> int:
    """A TCP line server on 127.0.0.1 (a unit of its own); returns its port."""
    script = textwrap.dedent("""\
        import socket, sdnotify
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        open("/run/line-server.port", "w").write(str(port))
        sdnotify.SystemdNotifier().notify("READY=1")
        while True:
            conn, peer = server.accept()
            with conn:
                line = conn.makefile().readline().strip()
                print(f"line server got {line!r}", flush=True)
                conn.sendall(f"ack {line}\\n".encode())
        """)
    container.install_unit(LINE_SERVER, textwrap.dedent(f"""\
        [Service]
        Type=notify
        ExecStart={exec_python(python, script)}
        """))
    container.systemctl("start", LINE_SERVER)
    return int(container.run("cat", "/run/line-server.port").stdout)


def test_a_node_opens_tcp_connections_under_the_sandbox(swarmd: Swarmd,
                                                        venv_python: str) -> None:
    port = start_line_server(swarmd.c, venv_python)
    try:
        swarmd.start(nodes=2, app="swarmd_systemapps:tcp_client",
                     env={"TESTAPP_PERIOD": "0.2", "TESTAPP_TCP_PORT": str(port)})
        swarmd.wait_healthy(2)
        for node_id in (0, 1):
            answer = swarmd.wait_message(f"node {node_id} tcp", f"SWARMD_NODE_ID={node_id}")
            assert field(answer, "MESSAGE") == (
                f"node {node_id} tcp answer: ack hello from node {node_id}")
            sandbox = field(swarmd.wait_message(f"node {node_id} sandbox",
                                                f"SWARMD_NODE_ID={node_id}"), "MESSAGE")
            uid = int(sandbox.split("uid ")[1].split(",")[0])
            assert uid != 0, sandbox  # DynamicUser
            assert "CapEff 0000000000000000" in sandbox
            assert "AF_NETLINK refused (EAFNOSUPPORT)" in sandbox  # RestrictAddressFamilies
            assert "writing /etc refused (EROFS)" in sandbox  # ProtectSystem=strict
        got = wait_for(lambda: [e for e in swarmd.c.journal(
            since_cursor=swarmd.cursor, unit=LINE_SERVER) if "line server got" in
            str(e.get("MESSAGE"))] or None, 10, "the line server to log both nodes")
        assert len(got) >= 2
    finally:
        swarmd.c.systemctl("stop", LINE_SERVER, check=False)
