"""Node apps with known behaviour for the process and system tests.

Each reads its knobs from the environment (set through the config's `env:`), so one config
line picks a behaviour. `TESTAPP_ONLY_NODE` limits a fault to one node id; `TESTAPP_ONLY_GEN`
to one generation, so a replaced node behaves again.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from swarmd.api import Node

PERIOD = float(os.environ.get("TESTAPP_PERIOD", "0.2"))


def _targeted(node: Node) -> bool:
    only_node = os.environ.get("TESTAPP_ONLY_NODE")
    only_gen = os.environ.get("TESTAPP_ONLY_GEN")
    if only_node is not None and int(only_node) != node.id:
        return False
    return only_gen is None or int(only_gen) == node.generation


def steady(node: Node) -> int:
    """Healthy every PERIOD until TERM; on quiet it finishes and returns."""
    node.log.info("steady node %d gen %d up", node.id, node.generation)
    while not node.stopping.is_set():
        node.healthy()
        if node.quieting.is_set() and os.environ.get("TESTAPP_STAY_ON_QUIET") != "1":
            node.log.info("quiet: leaving")
            return 0
        node.stopping.wait(PERIOD)
    node.log.info("steady node %d stopping", node.id)
    return 0


def ignore_term(node: Node) -> int:
    """Reports forever and ignores SIGTERM: only KILL ends it."""
    if _targeted(node):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return steady(node)


def crash(node: Node) -> int:
    """Dies at start (targeted nodes), after a last word on stdout."""
    if _targeted(node):
        print(f"node {node.id} about to crash", flush=True)
        raise RuntimeError(f"boom in node {node.id}")
    return steady(node)


def code_once(node: Node) -> int:
    """Targeted nodes report TESTAPP_CODE once after a first healthy report, then healthy."""
    code = int(os.environ.get("TESTAPP_CODE", "3"))
    if _targeted(node):
        node.healthy()
        time.sleep(PERIOD)  # ok-sleep: the node app simulates work
        node.unhealthy(code)
        node.stopping.wait(PERIOD * 3)
    return steady(node)


def silent(node: Node) -> int:
    """Targeted nodes report once, then never again (a hung worker)."""
    if _targeted(node):
        node.healthy()
        if os.environ.get("TESTAPP_IGNORE_TERM") == "1":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)  # ok-sleep: the node app simulates work
    return steady(node)


def slow_boot(node: Node) -> int:
    """Targeted nodes never send a first report."""
    if _targeted(node):
        while not node.stopping.is_set():
            node.stopping.wait(1)
        return 0
    return steady(node)


def flood(node: Node) -> int:
    """Targeted nodes write reports as fast as they can."""
    if _targeted(node):
        fd = node._fd
        os.set_blocking(fd, True)
        payload = b"0\n" * 4096
        while not node.stopping.is_set():
            os.write(fd, payload)
        return 0
    return steady(node)


def print_flood(node: Node) -> int:
    """Targeted nodes print lines to stdout as fast as they can, reporting between them, for
    TESTAPP_FLOOD_SECONDS (default: until stopped), then run steady."""
    if _targeted(node):
        seconds = os.environ.get("TESTAPP_FLOOD_SECONDS")
        until = time.monotonic() + float(seconds) if seconds else float("inf")
        out = sys.stdout
        count = 0
        while not node.stopping.is_set() and time.monotonic() < until:
            out.write(f"node {node.id} flood line {count}\n")
            count += 1
            if count % 1000 == 0:
                out.flush()
                node.healthy()
        out.flush()
        count_file = os.environ.get("TESTAPP_COUNT_FILE")
        if count_file:  # how many it printed, where no limit applies
            with open(count_file + ".tmp", "w") as handle:
                handle.write(str(count))
            os.replace(count_file + ".tmp", count_file)
    return steady(node)


def flood_then_fail(node: Node) -> int:
    """Targeted nodes call node.healthy() in a tight loop for TESTAPP_FLOOD_SECONDS, then
    report code 1 every PERIOD (the first may wait in Node while the pipe is full)."""
    if _targeted(node):
        until = time.monotonic() + float(os.environ.get("TESTAPP_FLOOD_SECONDS", "1"))
        while time.monotonic() < until and not node.stopping.is_set():
            node.healthy()
        node.log.info("flood over, reporting 1")
        while not node.stopping.is_set():
            node.unhealthy(1)
            node.stopping.wait(PERIOD)
        return 0
    return steady(node)


def garbage(node: Node) -> int:
    """Targeted nodes write TESTAPP_GARBAGE (a Python bytes literal) once, then report."""
    if _targeted(node):
        data = eval(os.environ.get("TESTAPP_GARBAGE", "b'nonsense\\n'"))  # test input only
        os.write(node._fd, data)
        if os.environ.get("TESTAPP_CLOSE_PIPE") == "1":
            os.close(node._fd)
            while not node.stopping.is_set():
                node.stopping.wait(PERIOD)
            return 0
    return steady(node)


def fd_report(node: Node) -> int:
    """Prints its open fds (as targets) once, then behaves like steady."""
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    lines = []
    for fd in fds:
        try:
            lines.append(f"{fd}={os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    print("FDS " + " ".join(lines), flush=True)
    print("ENV " + " ".join(k for k in os.environ
                           if k.startswith(("NOTIFY", "WATCHDOG", "SWARMD"))), flush=True)
    print(f"SIGPIPE {signal.getsignal(signal.SIGPIPE)!r}", flush=True)
    return steady(node)


def exit_code(node: Node) -> int:
    """Returns TESTAPP_EXIT (targeted) after one report, or after reporting for
    TESTAPP_LINGER seconds."""
    if _targeted(node):
        node.healthy()
        until = time.monotonic() + float(os.environ.get("TESTAPP_LINGER", "0"))
        while time.monotonic() < until and not node.stopping.wait(PERIOD):
            node.healthy()
        sys.stdout.write("last words\n")
        return int(os.environ.get("TESTAPP_EXIT", "3"))
    return steady(node)


def _print_flood(seconds: float) -> None:
    line = "flood " + "x" * 70 + "\n"
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sys.stdout.write(line * 200)
    sys.stdout.flush()


def soak(node: Node) -> int:
    """steady, plus faults on demand: SIGUSR1 kills it (default action), SIGUSR2 makes it
    report code 3 once, SIGWINCH code 2 once, SIGURG print as fast as it can for a second
    (from a thread: the node keeps reporting)."""
    import threading

    pending: list[int] = []
    signal.signal(signal.SIGUSR2, lambda *_: pending.append(3))
    signal.signal(signal.SIGWINCH, lambda *_: pending.append(2))
    signal.signal(signal.SIGURG, lambda *_: threading.Thread(
        target=_print_flood, args=(1.0,), daemon=True).start())
    while not node.stopping.is_set():
        if pending:
            node.unhealthy(pending.pop())
        else:
            node.healthy()
        if node.quieting.is_set():
            return 0
        node.stopping.wait(PERIOD)
    return 0


def booting_deaf(node: Node) -> int:
    """Ignores TERM and never reports: a node stuck in its boot with its own handlers."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"deaf node {node.id} booting", flush=True)
    while True:
        time.sleep(3600)  # ok-sleep: the node app simulates a boot that never ends


def daemonizer(node: Node) -> int:
    """Starts TESTAPP_DAEMONS double-forked helpers that exit after a moment: orphans the
    supervisor inherits (as a subreaper, or as PID 1 of a container), then runs steady."""
    for _ in range(int(os.environ.get("TESTAPP_DAEMONS", "10"))):
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                os.setsid()
                time.sleep(0.3)  # ok-sleep: the helper does a moment of work
            os._exit(0)
        os.waitpid(pid, 0)
    return steady(node)


def log_flood(node: Node) -> int:
    """Targeted nodes log through node.log as fast as they can for TESTAPP_FLOOD_SECONDS
    (under the journal, those records go to journald from the node itself), then steady."""
    if _targeted(node):
        until = time.monotonic() + float(os.environ.get("TESTAPP_FLOOD_SECONDS", "2"))
        count = 0
        while time.monotonic() < until and not node.stopping.is_set():
            node.log.info("node %d log flood record %d", node.id, count)
            count += 1
            if count % 1000 == 0:
                node.healthy()
    return steady(node)


def leaver(node: Node) -> int:
    """Starts what a node must not leave behind: a `sleep` helper (its child, in its process
    group), a double-forked `sleep` daemon in its own session, and a double-forked Python
    daemon that never execs; writes their pids to TESTAPP_DIR/pids-<node>-<gen>, then steady."""
    import subprocess

    helper = subprocess.Popen(["sleep", "1000"])
    daemons = []
    for execs in (True, False):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            if os.fork() == 0:
                os.setsid()
                os.write(write_end, f"{os.getpid()}\n".encode())
                if execs:
                    os.execvp("sleep", ["sleep", "1000"])
                time.sleep(1000)  # ok-sleep: a daemon that outlives its node unless killed
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            daemons.append(int(pipe.readline()))
        os.waitpid(pid, 0)
    path = os.path.join(os.environ["TESTAPP_DIR"], f"pids-{node.id}-{node.generation}")
    with open(path + ".tmp", "w") as handle:
        handle.write(" ".join(str(pid) for pid in [helper.pid, *daemons]))
    os.rename(path + ".tmp", path)
    return steady(node)


def ballast(node: Node) -> int:
    """Holds TESTAPP_MB megabytes of its own (written, so resident; targeted nodes only), then
    steady; with TESTAPP_BURN=1 it also burns CPU between its reports."""
    held = bytearray((int(os.environ.get("TESTAPP_MB", "50")) << 20) if _targeted(node) else 0)
    for offset in range(0, len(held), 4096):
        held[offset] = 1
    if os.environ.get("TESTAPP_BURN") == "1" and _targeted(node):
        while not node.stopping.is_set():
            until = time.monotonic() + PERIOD
            while time.monotonic() < until:
                pass
            node.healthy()
        return 0
    return steady(node)


def metrics_worker(node: Node) -> int:
    """App metrics of every type, with a label value that needs escaping; one job per PERIOD.
    TESTAPP_SERIES=N adds a counter with N label values (cardinality); TESTAPP_METRICS_FLOOD=1
    invents a new label value at every job, without end."""
    jobs = node.metrics.counter("jobs", "Jobs done, by queue.", ["queue"])
    depth = node.metrics.gauge("queue_depth", "Jobs waiting in the queue.")
    took = node.metrics.histogram("job_seconds", "Seconds per job.", buckets=[0.01, 0.1, 1])
    extra = int(os.environ.get("TESTAPP_SERIES", "0"))
    flood = os.environ.get("TESTAPP_METRICS_FLOOD") == "1" and _targeted(node)
    if extra:
        tagged = node.metrics.counter("tagged", "One series per tag.", ["tag"])
        for tag in range(extra):
            tagged.labels(str(tag)).inc()
    if flood:
        invented = node.metrics.counter("requests", "Requests, by URL.", ["url"])
    count = 0
    while not node.stopping.is_set():
        count += 1
        jobs.labels("a").inc()
        jobs.labels('we"ird\\').inc()
        depth.set(count % 7)
        took.observe(0.005 * (count % 50))
        if flood:
            for _ in range(100):
                count += 1
                invented.labels(f"/item/{count}").inc()
        node.healthy()
        node.stopping.wait(PERIOD)
    return 0


def listener(node: Node) -> int:
    """A web worker of a socket-activated unit: the sockets sd_listen_fds() finds (python-
    systemd, as an app would) are served, one line per connection: its node, pid and the
    socket's name; steady meanwhile."""
    import socket
    import threading

    from systemd import daemon

    fds = daemon.listen_fds(unset_environment=False)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for index, fd in enumerate(fds):
        server = socket.socket(fileno=fd)
        name = names[index] if index < len(names) else "?"

        def serve(server: socket.socket = server, name: str = name) -> None:
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(f"node {node.id} pid {os.getpid()} socket {name}\n".encode())

        threading.Thread(target=serve, daemon=True).start()
    print(f"listening on {fds}", flush=True)
    return steady(node)
