"""Real forks of the real supervisor, watched through a notify socket the test binds itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from swarmd.control import ControlError, request
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"


def status_field(pid: int, name: str) -> int:
    """A number from /proc/PID/status: `VmRSS` (kB), `voluntary_ctxt_switches` (the times it
    slept and was woken)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Direct children of pid, zombies included."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.exists(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(p) for p in handle.read().split())
        except FileNotFoundError:
            pass
    return found


def zombies(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        try:
            with open(f"/proc/{child}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    out.append(child)
        except FileNotFoundError:
            pass
    return out


class NotifySocket:
    """An AF_UNIX datagram socket bound by the test, standing in for systemd's."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []  # (monotonic arrival, datagram)

    def poll(self) -> list[tuple[float, str]]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.messages
            self.messages.append((time.monotonic(), data.decode()))

    def assignments(self) -> list[tuple[float, str, str]]:
        """Every KEY=VALUE line received, with its arrival time."""
        out = []
        for when, datagram in self.poll():
            for line in datagram.split("\n"):
                key, _, value = line.partition("=")
                out.append((when, key, value))
        return out

    def values(self, key: str) -> list[str]:
        return [value for _, k, value in self.assignments() if k == key]

    def wait(self, key: str, predicate: Callable[[str], bool] = lambda v: True,
             timeout: float = 20.0, after: int = 0) -> str:
        """Wait for a KEY=VALUE (the `after`-th onwards) whose value satisfies predicate."""
        def found() -> str | None:
            for value in self.values(key)[after:]:
                if predicate(value):
                    return value
            return None
        return wait_for(found, timeout, f"{key}= matching on the notify socket; got "
                                        f"{self.values(key)[-5:]}")

    def close(self) -> None:
        self.sock.close()


class Swarm:
    """`python -m swarmd run` as a subprocess with its own config, notify socket and runtime
    directory; stderr goes to a file the test can read."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, watchdog_usec: int | None = None,
                 env: dict[str, str] | None = None, runtime: Path | None = None,
                 preexec: Callable[[], Any] | None = None, pass_fds: tuple[int, ...] = (),
                 launcher: list[str] | None = None) -> None:
        self.tmp = tmp
        self.config_path = tmp / "swarmd.yaml"
        self.write_config(config)
        self.notify = NotifySocket(tmp)
        self.runtime = runtime or tmp / "run"
        self.log_path = tmp / "swarmd.log"
        environ = dict(os.environ)
        environ.update({
            "NOTIFY_SOCKET": self.notify.path,
            "RUNTIME_DIRECTORY": str(self.runtime),
            "PYTHONPATH": os.pathsep.join([str(APPS), str(REPO)]),
            "PYTHONUNBUFFERED": "1",
        })
        environ.pop("JOURNAL_STREAM", None)
        environ.pop("WATCHDOG_USEC", None)
        environ.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            environ["WATCHDOG_USEC"] = str(watchdog_usec)
        environ.update(env or {})
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # `launcher`: what runs `swarmd run -c PATH` (default: this interpreter's -m swarmd)
        self.proc = subprocess.Popen(
            [*(launcher or [sys.executable, "-m", "swarmd"]), "run", "-c",
             str(self.config_path)],
            stdout=self.log, stderr=subprocess.STDOUT, env=environ, cwd=str(tmp),
            preexec_fn=preexec, pass_fds=pass_fds)
        self.pid = self.proc.pid

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))
        os.chmod(self.config_path, 0o644)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return request(str(self.runtime), {"command": "status"}, timeout=10)

    def nodes(self) -> dict[int, dict[str, Any]]:
        return {node["id"]: node for node in self.status()["nodes"]}

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.notify.wait("READY", timeout=timeout)

    def wait_status(self, text: str, timeout: float = 30.0) -> str:
        return self.notify.wait("STATUS", lambda v: text in v, timeout=timeout)

    def wait_node(self, node_id: int, predicate: Callable[[dict[str, Any]], bool],
                  timeout: float = 30.0, what: str = "") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            try:
                node = self.nodes().get(node_id)
            except ControlError:  # not listening yet, or restarting its socket
                return None
            return node if node is not None and predicate(node) else None
        return wait_for(check, timeout, what or f"node {node_id} to match")

    def wait_output(self, text: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: text in self.output() and self.output(), timeout,
                        f"{text!r} in the supervisor's output:\n{self.output()[-3000:]}")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"swarmd did not exit within {timeout}s:\n"
                                 f"{self.output()[-3000:]}") from None

    def stop(self) -> None:
        """Teardown: whatever the test did, leave no process behind."""
        if self.proc.poll() is None:
            pids = children(self.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in pids:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()
        self.notify.close()


def base_config(**overrides: Any) -> dict[str, Any]:
    """A fast config for tests: short timeouts, test apps."""
    config: dict[str, Any] = {
        "nodes": 2,
        "app": "swarmd_testapps:steady",
        "timeouts": {"boot": "10s", "report": "5s", "shutdown": "5s", "drain": "5s"},
        "restart": {"delay": 0, "max_delay": "1s", "reset_after": "60s", "give_up_after": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1)


class Watch:
    """Reads the notify socket all along (a message's time is when the test read it), from
    now until stop(): the deploy's STATUS= lines and WATCHDOG=1 gaps."""

    def __init__(self, s: Swarm) -> None:
        self.s = s
        self.seen = len(s.notify.poll())
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        if s.notify.values("WATCHDOG"):  # the window opens and closes with a ping
            self._watchdogs_after(self.seen)

    def _watchdogs_after(self, index: int) -> None:
        wait_for(lambda: any("WATCHDOG=1" in d for _, d in self.s.notify.messages[index:]),
                 5, "a WATCHDOG=1")

    def _poll(self) -> None:
        while not self._done.is_set():
            self.s.notify.poll()
            self._done.wait(0.005)

    def stop(self) -> list[tuple[float, str, str]]:
        if self.s.notify.values("WATCHDOG"):
            self._watchdogs_after(len(self.s.notify.messages))
        self._done.set()
        self._thread.join()
        self.s.notify.poll()
        out = []
        for when, datagram in self.s.notify.messages[self.seen:]:
            for line in datagram.split("\n"):
                key, _, value = line.partition("=")
                out.append((when, key, value))
        return out


def watchdog_gaps(messages: list[tuple[float, str, str]]) -> list[float]:
    times = [when for when, k, _ in messages if k == "WATCHDOG"]
    return [b - a for a, b in zip(times, times[1:], strict=False)]
