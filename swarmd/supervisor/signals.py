"""Signals to the supervisor: queued by handlers, read by the loop. Until `install`, they are
held (swarmd/supervisor/held.py)."""

from __future__ import annotations

import signal
from collections import deque

from swarmd.supervisor.held import HANDLED, STOP_SIGNALS, hold

__all__ = ["HANDLED", "STOP_SIGNALS", "SignalQueue", "hold"]


class SignalQueue:
    """Handlers only queue; the wake-up fd makes the loop's poll return."""

    def __init__(self) -> None:
        import socket  # here, not at the top: hold() runs before anything else is loaded

        self.pending: deque[int] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.installed = False

    def install(self) -> None:
        """Handlers in, then every signal unblocked (a mask inherited from whoever started
        swarmd would hold signals back from the loop, and from every node forked after it;
        systemd starts services with none, a shell may not). Pending ones arrive now."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._queue)
        self.installed = True
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def _queue(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    @property
    def wake_fd(self) -> int:
        return self._wake_r.fileno()

    def fds(self) -> list[int]:
        return [self._wake_r.fileno(), self._wake_w.fileno()]

    def drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def stop_requested(self) -> bool:
        # tuple(): one C call, so a handler cannot append while the deque is walked
        return any(sig in STOP_SIGNALS for sig in tuple(self.pending))

    def hold_for_exec(self) -> None:
        """Right before the supervisor re-executes itself: the signals wait, pending, for the
        new code's handlers."""
        hold()

    def uninstall(self) -> None:
        if not self.installed:
            return
        signal.set_wakeup_fd(-1)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        self.installed = False

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()
