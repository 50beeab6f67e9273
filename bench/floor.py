"""The floor: the least a supervisor of forked Python nodes does, to show what this machine can
do at best. `python floor.py N module:function` forks N nodes running the (preloaded) app with a
real swarmd.api.Node on a health pipe, watches one pidfd per node in a selector, respawns a node
that exits, sends READY=1 to $NOTIFY_SOCKET once every node reported once (and WATCHDOG=1 every
$WATCHDOG_USEC/2 from its loop), and on SIGTERM sends TERM to every node and exits when all are
gone. No config, events, timers, status or fencing."""

import importlib
import os
import selectors
import signal
import socket
import sys
import time

from swarmd.api import Node

R = selectors.EVENT_READ


def main() -> None:
    count, (module, _, name) = int(sys.argv[1]), sys.argv[2].partition(":")
    app = getattr(importlib.import_module(module), name)
    notify, where = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), os.environ["NOTIFY_SOCKET"]
    sel, live, started, stopping = selectors.DefaultSelector(), {}, set(), False
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda *_: None)
    sel.register(wake_r, R, ("term",))
    dog = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6 or None
    next_dog = time.monotonic()

    def spawn(slot: int, gen: int) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                os.set_blocking(w, False)
                node = Node(slot, gen, w)
                signal.signal(signal.SIGTERM, lambda *_: node.stopping.set())
                code = app(node) or 0
            finally:
                os._exit(code)
        os.close(w)
        pidfd = live[pid] = os.pidfd_open(pid)
        sel.register(pidfd, R, ("exit", slot, gen, pid))
        sel.register(r, R, ("health", slot))

    for slot in range(count):
        spawn(slot, 0)
    while live or not stopping:
        if dog and (now := time.monotonic()) >= next_dog:
            notify.sendto(b"WATCHDOG=1", where)
            next_dog = next_dog + dog if next_dog + dog > now else now + dog
        for key, _ in sel.select(dog and max(0.0, next_dog - time.monotonic())):
            if key.data[0] == "health":
                if not os.read(key.fd, 65536):  # a real one would count or parse the reports
                    sel.unregister(key.fd)
                    os.close(key.fd)
                elif key.data[1] not in started:
                    started.add(key.data[1])
                    if len(started) == count:
                        notify.sendto(b"READY=1", where)
            elif key.data[0] == "exit":
                os.waitpid(key.data[3], 0)
                sel.unregister(key.fd)
                os.close(live.pop(key.data[3]))
                if not stopping:
                    spawn(key.data[1], key.data[2] + 1)
            else:
                os.read(wake_r, 64)
                stopping = True
                for pidfd in live.values():
                    signal.pidfd_send_signal(pidfd, signal.SIGTERM)


if __name__ == "__main__":
    main()
