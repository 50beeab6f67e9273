"""swarmd.systemd.notify: the Notifier with a fake environ, and with a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmd.systemd import notify as sd
from swarmd.systemd.notify import Notifier


@pytest.fixture(autouse=True)
def no_real_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever runs the tests must not receive our notifications."""
    for name in sd.NOTIFY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(1.0)  # datagrams are queued at send time; this only bounds a failure
    with receiver:
        yield path, receiver


def received(receiver: socket.socket) -> str:
    return receiver.recv(4096).decode()


def nothing_more(receiver: socket.socket) -> bool:
    receiver.setblocking(False)
    try:
        receiver.recv(4096)
    except BlockingIOError:
        return True
    return False


# --- with a fake environ --------------------------------------------------------------------


def test_without_notify_socket_the_notifier_is_disabled() -> None:
    environ = {"PATH": "/usr/bin", "WATCHDOG_USEC": "2000000"}
    notifier = Notifier(environ)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.fileno() is None
    notifier.ready("x")  # no-ops, no errors
    notifier.status("y")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping()
    notifier.extend_timeout(10)


@pytest.mark.parametrize("usec, seconds", [("2000000", 1.0), ("30000000", 15.0),
                                           ("500000", 0.25), ("1", 5e-7)])
def test_watchdog_interval_is_half_of_watchdog_usec(usec: str, seconds: float) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval == pytest.approx(seconds)


@pytest.mark.parametrize("pid", [str(os.getpid()), f" {os.getpid()}\n", ""])
def test_watchdog_is_ours_when_watchdog_pid_is_unset_or_our_pid(pid: str) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "4000000",
                         "WATCHDOG_PID": pid})
    assert notifier.watchdog_interval == 2.0


@pytest.mark.parametrize("pid", [str(os.getpid() + 1), "1", "garbage"])
def test_no_watchdog_when_watchdog_pid_names_another_process(pid: str) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "4000000",
                         "WATCHDOG_PID": pid})
    assert notifier.watchdog_interval is None


@pytest.mark.parametrize("environ", [
    {"WATCHDOG_USEC": "4000000"},                                     # no NOTIFY_SOCKET
    {"NOTIFY_SOCKET": "/nonexistent/notify"},                          # no WATCHDOG_USEC
    {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "0"},
    {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "-5"},
    {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "4s"},
])
def test_no_watchdog_without_a_usable_watchdog_usec(environ: dict[str, str]) -> None:
    assert Notifier(environ).watchdog_interval is None


def test_the_notify_variables_are_removed_from_the_environ_it_was_given() -> None:
    environ = {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "4000000",
               "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin", "QUEUE": "q1"}
    notifier = Notifier(environ)
    assert environ == {"PATH": "/usr/bin", "QUEUE": "q1"}
    assert notifier.watchdog_interval == 2.0  # read before they were removed


def test_by_default_the_notify_variables_are_removed_from_os_environ(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("SWARMD_UNIT_TEST_MARKER", "kept")
    Notifier()
    assert "WATCHDOG_USEC" not in os.environ
    assert "WATCHDOG_PID" not in os.environ
    assert os.environ["SWARMD_UNIT_TEST_MARKER"] == "kept"


def test_an_unreachable_notify_socket_disables_the_notifier(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()


# --- with a real socket ---------------------------------------------------------------------


@pytest.fixture
def notifier(notify_socket: tuple[str, socket.socket],
             monkeypatch: pytest.MonkeyPatch) -> Notifier:
    path, _ = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier()
    assert notifier.enabled
    assert "NOTIFY_SOCKET" not in os.environ
    return notifier


def test_fileno_is_the_connected_socket(notifier: Notifier) -> None:
    assert isinstance(notifier.fileno(), int)


def test_ready(notifier: Notifier, notify_socket: tuple[str, socket.socket]) -> None:
    _, receiver = notify_socket
    notifier.ready()
    assert received(receiver) == "READY=1"


def test_ready_with_a_status(notifier: Notifier, notify_socket: tuple[str, socket.socket]) -> None:
    _, receiver = notify_socket
    notifier.ready("4/4 healthy, 0 restarts")
    assert received(receiver) == "READY=1\nSTATUS=4/4 healthy, 0 restarts"
    notifier.status("4/4 healthy, 0 restarts")  # already told: not sent again
    assert nothing_more(receiver)


def test_status_is_sent_only_when_it_changed(notifier: Notifier,
                                             notify_socket: tuple[str, socket.socket]) -> None:
    _, receiver = notify_socket
    for text in ("3/4 healthy, 0 restarts", "3/4 healthy, 0 restarts",
                 "4/4 healthy, 0 restarts", "4/4 healthy, 0 restarts", "3/4 healthy, 0 restarts"):
        notifier.status(text)
    assert [received(receiver) for _ in range(3)] == [
        "STATUS=3/4 healthy, 0 restarts", "STATUS=4/4 healthy, 0 restarts",
        "STATUS=3/4 healthy, 0 restarts"]
    assert nothing_more(receiver)


def test_reloading_sends_monotonic_usec(notifier: Notifier,
                                        notify_socket: tuple[str, socket.socket]) -> None:
    _, receiver = notify_socket
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    first, second = received(receiver).split("\n")
    assert first == "RELOADING=1"
    name, _, value = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


@pytest.mark.parametrize("call, message", [
    (lambda n: n.watchdog(), "WATCHDOG=1"),
    (lambda n: n.stopping(), "STOPPING=1"),
    (lambda n: n.extend_timeout(15), "EXTEND_TIMEOUT_USEC=15000000"),
    (lambda n: n.extend_timeout(0.5), "EXTEND_TIMEOUT_USEC=500000"),
    (lambda n: n.send("A=1", "B=2"), "A=1\nB=2"),
])
def test_other_messages(notifier: Notifier, notify_socket: tuple[str, socket.socket],
                        call, message: str) -> None:
    _, receiver = notify_socket
    call(notifier)
    assert received(receiver) == message


def test_an_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"swarmd-unit-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(1.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier().ready()
        assert received(receiver) == "READY=1"


def test_the_notify_socket_of_the_given_environ_is_used(
        notify_socket: tuple[str, socket.socket]) -> None:
    path, receiver = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready()
    assert received(receiver) == "READY=1"
