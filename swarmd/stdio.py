"""The standard streams of `swarmd run`: never closed under swarmd, never fatal to write to.

Light on purpose: the entry point runs it before anything else is imported or opened.
"""

from __future__ import annotations

import os
import sys


def warn(text: str) -> None:
    """One line to stderr that never raises: a warning must not be what ends swarmd when
    stderr is a full disk (ENOSPC), a closed pipe or closed altogether (2>&-)."""
    if sys.stderr is None:  # fd 2 was closed at start and nobody reopened it
        return
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def ensure_std_fds() -> None:
    """Started with fd 0, 1 or 2 closed, the next file swarmd opens would take its number and
    get whatever is written to "stderr" (a node's, a library's, a fatal error's): /dev/null
    holds each missing one instead."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # the lowest free number: this one, unless a lower one was also free
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:  # Python found fd 2 closed at start
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - lives as long as the process


def flush_std_streams() -> None:
    """Write out what Python buffered for stdout and stderr, before a fork (a child would write
    it a second time) or an exec (it would be lost); a stream that cannot take it is skipped."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
