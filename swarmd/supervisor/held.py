"""The signals the supervisor handles, and holding them from its first line of Python.

Before a handler is in, HUP, TERM and INT would end the process and TSTP or TTIN stop it; so
`swarmd run` blocks them the moment its entry point runs (and a re-executed supervisor inherits
them blocked across the exec): they wait, pending, until the loop's handlers are in
(swarmd/supervisor/signals.py). Only the C module here: `signal` costs ~5 ms of imports (enum),
and the first start forks its trial load before anything else is loaded.
"""

from __future__ import annotations

import _signal

STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT)
HANDLED = (*STOP_SIGNALS, _signal.SIGHUP, _signal.SIGTSTP, _signal.SIGTTIN, _signal.SIGCHLD)


def hold() -> None:
    """Block every signal the supervisor handles, until SignalQueue.install."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, HANDLED)
