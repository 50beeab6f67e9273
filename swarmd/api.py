"""The Node handle that app code gets inside a forked node.

It never imports the supervisor: a node only knows its id, its generation, its health pipe and
the two events the supervisor's signals set.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from swarmd.config.health import MAX_CODE


class Node:
    """What `run(node)` receives: report health, watch for stop and quiet, log."""

    def __init__(self, node_id: int, generation: int, health_fd: int,
                 log: logging.Logger | None = None, supervisor_pid: int | None = None,
                 after_first_report: Callable[[], None] | None = None) -> None:
        self.id = node_id
        self.generation = generation
        self.stopping = threading.Event()  # set on SIGTERM: finish up and return
        self.quieting = threading.Event()  # set on SIGTSTP: finish current work, take no new
        self.log = log or logging.getLogger("swarmd.node")
        self._fd = health_fd
        self._lock = threading.Lock()
        self._pending: int | None = None  # worst code not yet written (pipe was full)
        self._supervisor_pid = supervisor_pid if supervisor_pid is not None else os.getppid()
        self._after_first_report = after_first_report  # run once, after the first write

    def healthy(self) -> None:
        """Report code 0. Call it at least once per `timeouts.report`."""
        self.report(0)

    def unhealthy(self, code: int = 1) -> None:
        """Report a problem, a code from 1 to 255; the code table decides what happens."""
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= MAX_CODE:
            raise ValueError(f"unhealthy() takes a code from 1 to {MAX_CODE}, got {code!r}")
        self.report(code)

    def report(self, code: int) -> None:
        """Write one code to the health pipe without ever blocking the app.

        When the pipe is full the supervisor has not read yet; the worst code is kept and sent
        with the next report, which is what the supervisor would have made of both anyway."""
        with self._lock:
            if self._pending is not None:
                code = max(code, self._pending)
            try:
                os.write(self._fd, b"%d\n" % code)
                self._pending = None
            except BlockingIOError:
                self._pending = code
            except (BrokenPipeError, OSError):
                self._pending = None
                self.stopping.set()  # the supervisor is gone: nobody is listening any more
        if self._after_first_report is not None:
            hook, self._after_first_report = self._after_first_report, None
            hook()

    @property
    def orphaned(self) -> bool:
        """True when the supervisor that forked this node is gone."""
        return os.getppid() != self._supervisor_pid
