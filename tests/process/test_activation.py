"""Socket activation: a listening socket passed the way systemd passes it (fd 3, LISTEN_FDS,
LISTEN_PID = the supervisor, LISTEN_FDNAMES) reaches every node as its own: sd_listen_fds() in
a Python node finds it, a command node sees LISTEN_PID = its pid and its health fd after the
socket; across a deploy too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.process.harness import base_config, wait_for

# swarmd started as systemd starts a socket-activated service: LISTEN_PID is the pid that
# runs swarmd, which an exec keeps
LAUNCHER = [sys.executable, "-c", "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
            "os.execv(sys.executable, [sys.executable, '-m', 'swarmd', *sys.argv[1:]])"]


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def activated(swarm, config, server: socket.socket):  # type: ignore[no-untyped-def]
    def at_fd_3() -> None:
        os.dup2(server.fileno(), 3)
    return swarm(config, launcher=LAUNCHER, preexec=at_fd_3, pass_fds=(server.fileno(), 3),
                 env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"})


def ask(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return conn.makefile().readline().strip()


def test_every_python_node_serves_the_passed_socket(swarm, listening: socket.socket) -> None:
    s = activated(swarm, base_config(nodes=2, app="swarmd_testapps:listener"), listening)
    s.wait_ready()
    port = listening.getsockname()[1]
    pids = {n["pid"]: i for i, n in s.nodes().items()}
    seen: set[int] = set()

    def both_answered() -> bool:
        answer = ask(port)
        words = answer.split()
        assert words[0] == "node" and words[4:] == ["socket", "web"], answer
        assert pids.get(int(words[3])) == int(words[1]), (answer, pids)
        seen.add(int(words[1]))
        return seen == {0, 1}

    wait_for(both_answered, 20, "an answer from each node", interval=0.01)
    assert "listening on [3]" in s.output()
    # after a deploy (a re-exec of the supervisor, nodes from its loader) the same
    done = subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                           str(s.runtime)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    pids = {n["pid"]: i for i, n in s.nodes().items()}
    seen.clear()
    wait_for(both_answered, 20, "an answer from each new node", interval=0.01)


def test_a_command_node_gets_the_socket_and_its_health_fd_after_it(
        swarm, listening: socket.socket, tmp_path) -> None:
    script = tmp_path / "worker.sh"
    out = tmp_path / "env-$SWARMD_NODE_ID"
    script.write_text(f'echo "$LISTEN_FDS $LISTEN_PID $$ $LISTEN_FDNAMES $SWARMD_HEALTH_FD" '
                      f'> "{out}"\n'
                      f'[ -S /proc/self/fd/3 ] || [ -e /proc/self/fd/3 ] && '
                      f'readlink /proc/self/fd/3 >> "{out}"\n'
                      f'while true; do echo 0 >&"$SWARMD_HEALTH_FD"; sleep 0.2; done\n')
    config = base_config(nodes=1, command=["sh", str(script)])
    del config["app"]
    s = activated(swarm, config, listening)
    s.wait_ready()
    text = wait_for(lambda: (p := tmp_path / "env-0").exists() and p.read_text(), 10,
                    "the node's environment")
    first, fd3 = text.splitlines()[:2]
    count, listen_pid, own_pid, names, health = first.split()
    assert (count, names, health) == ("1", "web", "4")
    assert listen_pid == own_pid == str(s.nodes()[0]["pid"])
    assert fd3.startswith("socket:")
