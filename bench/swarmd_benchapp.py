"""Node apps for the benchmark; the same functions run under swarmd and under the floor.

Each app tells the bench what it did through datagrams to `$BENCH_SOCKET` (an AF_UNIX datagram
socket the bench binds), stamped with the node's own CLOCK_MONOTONIC (one clock for every
process on the host), so the bench's own scheduling delays never enter a figure:

    up <id> <generation> <pid> <t_ns>          as the first report is written (every app)
    hang <id> <pid> <t_ns>                      a report was written at t_ns, then SIGSTOP
    cont <id> <pid> <t_ns>                      running again (the supervisor sent TERM + CONT)
    flood <pid> <t_ns> <written> <queued>       every 0.2 s: reports written, bytes still in
                                                the pipe (so reports read = written - queued/2)

Knobs (environment): BENCH_PERIOD seconds between reports (default 1).
The bench reaches into `node._fd` (the health pipe) for the hang and flood apps only: a report
written from a signal handler must not take Node's lock, and the flood writes its lines itself.
Nothing of swarmd is imported here at run time: under the floor a node is the floor's own
minimal handle (id, generation, stopping, healthy(), _fd), under swarmd a real swarmd.api.Node.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import struct
import termios
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the floor runs these apps without any of swarmd
    from swarmd.api import Node

_sock: socket.socket | None = None


def _send(text: str) -> None:
    global _sock
    path = os.environ.get("BENCH_SOCKET")
    if not path:
        return
    if _sock is None:
        _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        _sock.sendto(text.encode(), path)
    except OSError:
        pass  # the bench is gone; nothing to tell


def _first_report(node: Node) -> None:
    now = time.monotonic_ns()  # the write follows at once; what healthy() may do after the
    node.healthy()  # write (none of it delays the supervisor's read) is not counted
    _send(f"up {node.id} {node.generation} {os.getpid()} {now}")


def _hang(node: Node) -> None:
    """SIGUSR1 (from the bench): report once, say when, freeze; say when we run again."""
    os.write(node._fd, b"0\n")  # not node.healthy(): its lock may be held by the main thread
    _send(f"hang {node.id} {os.getpid()} {time.monotonic_ns()}")
    os.kill(os.getpid(), signal.SIGSTOP)
    _send(f"cont {node.id} {os.getpid()} {time.monotonic_ns()}")


def idle(node: Node) -> int:
    """Reports every BENCH_PERIOD at a random phase; freezes itself on SIGUSR1."""
    period = float(os.environ.get("BENCH_PERIOD", "1"))
    signal.signal(signal.SIGUSR1, lambda *_: _hang(node))
    _first_report(node)
    node.stopping.wait(random.Random(os.getpid()).uniform(0, period))
    while not node.stopping.is_set():
        node.healthy()
        node.stopping.wait(period)
    return 0


def quick_quiet(node: Node) -> int:
    """idle, but a quieted node leaves at once (what a deploy's drain hopes for)."""
    period = float(os.environ.get("BENCH_PERIOD", "1"))
    _first_report(node)
    while not node.stopping.is_set() and not node.quieting.is_set():
        node.healthy()
        node.quieting.wait(min(period, 0.05))
    return 0


def flood(node: Node) -> int:
    """Reports as fast as it can, each a write of its own to the health pipe (what a command
    node, or an app writing its fd itself, can send; swarmd's Node.healthy() would make a 0
    after a 0 a heartbeat in memory and never reach the pipe), blocking: a write returns only
    once the bytes are in the pipe, so every counted report is read eventually."""
    fd = node._fd
    os.set_blocking(fd, True)
    _first_report(node)
    written = 1
    probe = b"\0\0\0\0"
    next_tell = time.monotonic() + 0.2
    line = b"0\n"
    while not node.stopping.is_set():
        for _ in range(256):
            os.write(fd, line)
        written += 256
        now = time.monotonic()
        if now >= next_tell:
            queued = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, probe))[0]
            _send(f"flood {os.getpid()} {time.monotonic_ns()} {written} {queued}")
            next_tell = now + 0.2
    return 0


def metrics20(node: Node) -> int:
    """idle, plus 20 app series: a counter with 20 label values, each bumped per report (the
    update is batched by the node and travels with the report)."""
    period = float(os.environ.get("BENCH_PERIOD", "1"))
    jobs = node.metrics.counter("bench_jobs", "Jobs done, by queue.", ["queue"])
    queues = [jobs.labels(f"q{i}") for i in range(20)]
    for queue in queues:
        queue.inc()
    _first_report(node)
    node.stopping.wait(random.Random(os.getpid()).uniform(0, period))
    while not node.stopping.is_set():
        for queue in queues:
            queue.inc()
        node.healthy()
        node.stopping.wait(period)
    return 0
