"""sd_notify for the supervisor, through sdnotify; a silent no-op where systemd is not there."""

from __future__ import annotations

import os
import socket
import time

import sdnotify

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """sd_notify for the supervisor: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

    Built once at start, before any fork; it then removes the notify variables from the
    environment so that no node inherits them (NotifyAccess=main would refuse them anyway)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = _watchdog_interval(env)
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._last_status: str | None = None
        if self.enabled:
            self._notifier = sdnotify.SystemdNotifier()
            # sdnotify reads os.environ; connect to the socket of the environ we were given.
            if self._notifier.socket is not None:
                self._notifier.socket.close()
            self._notifier.socket = _connect(env["NOTIFY_SOCKET"])
            self.enabled = self._notifier.socket is not None
        # what the nodes must not inherit, kept for a re-execution of the supervisor itself
        self._taken = {name: env.pop(name) for name in NOTIFY_ENV if name in env}

    def environment(self) -> dict[str, str]:
        """The notify variables this Notifier took out of the environment."""
        return dict(self._taken)

    def fileno(self) -> int | None:
        sock = self._notifier.socket if self._notifier else None
        return sock.fileno() if sock is not None else None

    def send(self, *lines: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *(() if status is None else (f"STATUS={status}",)))
        if status is not None:
            self._last_status = status

    def status(self, text: str) -> bool:
        """STATUS= only when the text changed; True when it did."""
        if text == self._last_status:
            return False
        self._last_status = text
        self.send(f"STATUS={text}")
        return True

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog_timeout(self, seconds: float) -> None:
        """WATCHDOG_USEC=: systemd's watchdog timeout from now on (see sd_notify(3))."""
        self.send(f"WATCHDOG_USEC={int(seconds * 1_000_000)}")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def _connect(address: str) -> socket.socket | None:
    """A non-blocking datagram socket connected to NOTIFY_SOCKET ("@name" = abstract)."""
    if address.startswith("@"):
        address = "\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)  # a slow reader must never block the supervision loop
    return sock


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), None when not ours."""
    usec = env.get("WATCHDOG_USEC")
    if not usec or not env.get("NOTIFY_SOCKET"):
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
