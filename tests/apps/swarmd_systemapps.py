"""Node apps for the system tests (the real unit in a container), next to swarmd_testapps.

Knobs come from the environment (the config's `env:`), as in swarmd_testapps; every app ends
up in swarmd_testapps.steady, so a node logs "steady node N stopping" when TERMed.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

from swarmd_testapps import PERIOD, _targeted, steady

from swarmd.api import Node


def chatty(node: Node) -> int:
    """One line on each route to the journal: stdout, stderr, a `<3>` prefix, node.log."""
    print(f"node {node.id} gen {node.generation} says hello on stdout")
    print(f"node {node.id} complains on stderr", file=sys.stderr, flush=True)
    print(f"<3>node {node.id} sets its own priority", flush=True)
    node.log.warning("node %d warns through node.log", node.id)
    return steady(node)


def late(node: Node) -> int:
    """Sends its first report only after TESTAPP_BOOT_DELAY seconds."""
    delay = float(os.environ.get("TESTAPP_BOOT_DELAY", "1"))
    time.sleep(delay)  # ok-sleep: the node app simulates a slow boot
    return steady(node)


def code_burst(node: Node) -> int:
    """Targeted nodes: healthy, then TESTAPP_CODE reported TESTAPP_REPEAT times one PERIOD
    apart, then healthy again; a log line marks the end of each phase."""
    if _targeted(node):
        code = int(os.environ.get("TESTAPP_CODE", "3"))
        node.healthy()
        time.sleep(PERIOD)  # ok-sleep: the node app simulates work
        for _ in range(int(os.environ.get("TESTAPP_REPEAT", "5"))):
            node.unhealthy(code)
            time.sleep(PERIOD)  # ok-sleep: the node app simulates work
        node.log.info("node %d: code burst over", node.id)
        for _ in range(5):
            node.healthy()
            time.sleep(PERIOD)  # ok-sleep: the node app simulates work
        node.log.info("node %d: healthy again", node.id)
    return steady(node)


def _probe(what: str, action) -> str:  # type: ignore[no-untyped-def]
    try:
        action()
    except OSError as exc:
        return f"{what} refused ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
    return f"{what} allowed"


def tcp_client(node: Node) -> int:
    """Talks to a line server on 127.0.0.1:TESTAPP_TCP_PORT, prints the answer, then prints
    what the sandbox lets it do."""
    port = int(os.environ["TESTAPP_TCP_PORT"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"hello from node {node.id}\n".encode())
            answer = conn.makefile().readline().strip()
        print(f"node {node.id} tcp answer: {answer}", flush=True)
    except OSError as exc:
        print(f"node {node.id} tcp failed: {exc!r}", flush=True)

    def netlink() -> None:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()

    def write_etc() -> None:
        with open(f"/etc/swarmd-probe-{node.id}", "w") as handle:
            handle.write("x")

    with open("/proc/self/status") as handle:
        caps = next(line.split()[1] for line in handle if line.startswith("CapEff:"))
    print(f"node {node.id} sandbox: uid {os.getuid()}, CapEff {caps}, "
          f"{_probe('AF_NETLINK', netlink)}, {_probe('writing /etc', write_etc)}", flush=True)
    return steady(node)
