"""Socket activation: the listening sockets a `.socket` unit passes to the supervisor go to
every node, as gunicorn and Puma users expect of web workers.

systemd passes them as fds 3.. with LISTEN_FDS, LISTEN_PID (the supervisor's pid) and
LISTEN_FDNAMES. The supervisor takes them (so that nothing of it mistakes them for its own) and
keeps what it learnt as SWARMD_LISTEN_FDS/SWARMD_LISTEN_FDNAMES in its environment, which
crosses a deploy's re-exec and reaches the deploy's loader; each node gets LISTEN_FDS,
LISTEN_FDNAMES and its own pid as LISTEN_PID, so `sd_listen_fds()` in a node returns the
sockets, at the same fds 3... A command node's health fd comes after them.
"""

from __future__ import annotations

import os

SD_LISTEN_FDS_START = 3
MAX_LISTEN_FDS = 64  # far above any .socket unit's count; a bound on a value from outside


def take() -> int:
    """In the supervisor, first thing: the sockets systemd passed it, if it is their LISTEN_PID.
    Returns how many (0: not socket-activated, or they were meant for another process)."""
    env = os.environ
    fds, pid, names = env.pop("LISTEN_FDS", None), env.pop("LISTEN_PID", None), \
        env.pop("LISTEN_FDNAMES", None)
    if "SWARMD_LISTEN_FDS" in env:  # a re-exec, or a deploy's loader: taken already
        return count()
    try:
        n = int(fds or 0)
        mine = int(pid or -1) == os.getpid()
    except ValueError:
        return 0
    if not mine or not 0 < n <= MAX_LISTEN_FDS:
        return 0
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n):
        try:
            os.set_inheritable(fd, True)  # kept across a deploy's re-exec and a node's exec
        except OSError:
            return 0  # systemd said N, but they are not all there: pass nothing on
    env["SWARMD_LISTEN_FDS"] = str(n)
    if names:
        env["SWARMD_LISTEN_FDNAMES"] = names
    return n


def count() -> int:
    try:
        n = int(os.environ.get("SWARMD_LISTEN_FDS", "0"))
    except ValueError:
        return 0
    return n if 0 < n <= MAX_LISTEN_FDS else 0


def for_node() -> None:
    """In a node, after its fork: the sockets are its own now (LISTEN_PID = its pid)."""
    n = count()
    if n:
        os.environ["LISTEN_FDS"] = str(n)
        os.environ["LISTEN_PID"] = str(os.getpid())
        names = os.environ.get("SWARMD_LISTEN_FDNAMES")
        if names:
            os.environ["LISTEN_FDNAMES"] = names
