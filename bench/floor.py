"""The floor: the least a supervisor of forked Python nodes does, to show what this machine can
do at best. `python floor.py N module:function` imports the app once (preload), forks N nodes
that each call it with a bare handle (its id, generation, a `stopping` event set on TERM, and
healthy() = one write of "0\\n" to its pipe), watches one pidfd per node in a selector, reads
the pipes, respawns a node that exits, sends READY=1 to $NOTIFY_SOCKET once every node
reported once (and WATCHDOG=1 every $WATCHDOG_USEC/2 from its loop), and on SIGTERM sends TERM
to every node and exits when all are gone. Nothing of swarmd: no config, events, timers,
status, fencing, and no swarmd module in the supervisor or in a node (checked at start)."""

import importlib
import os
import selectors
import signal
import socket
import sys
import threading
import time

R = selectors.EVENT_READ


class Handle:
    """What a bench app uses of a node: the floor's own, not swarmd's Node."""

    __slots__ = ("id", "generation", "stopping", "_fd")

    def __init__(self, node_id: int, generation: int, fd: int) -> None:
        self.id, self.generation, self._fd = node_id, generation, fd
        self.stopping = threading.Event()

    def healthy(self) -> None:
        try:
            os.write(self._fd, b"0\n")
        except BlockingIOError:  # the pipe is full: the floor reads it when it can
            pass


def main() -> None:
    count, (module, _, name) = int(sys.argv[1]), sys.argv[2].partition(":")
    app = getattr(importlib.import_module(module), name)
    leaked = sorted(m for m in sys.modules if m == "swarmd" or m.startswith("swarmd."))
    if leaked:
        raise SystemExit(f"floor: the app imported swarmd ({', '.join(leaked)}); the floor "
                         f"must hold nothing of swarmd")
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
                node = Handle(slot, gen, w)
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
