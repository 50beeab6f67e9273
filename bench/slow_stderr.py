"""Watchdog gaps of a supervisor whose stderr is read slowly while one node floods its stdout.

    .venv/bin/python bench/slow_stderr.py [--seconds 15] [--rate 65536] [--swarmd DIR] [--attach]

Runs `python -m swarmd run` (this tree, or the copy in DIR holding swarmd/) with 4 nodes, node 0
printing as fast as it can, WATCHDOG_USEC=1s (a ping every 0.5 s) to a notify socket bound
here, and its stderr in a pipe this script reads at --rate bytes a second. Prints the gaps
between WATCHDOG=1 messages and how many "dropped" lines came out. Nothing is asserted.
--attach runs the supervisor with its sink attached to its poller (write-readiness), as the
loop does once that is wired (swarmd.systemd.events.StderrSink.attach).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = """\
nodes: 4
app: swarmd_testapps:print_flood
env: {TESTAPP_ONLY_NODE: "0"}
timeouts: {boot: 10s, report: 5s, shutdown: 5s}
"""


ATTACHED = """\
import sys
from swarmd.cli import main
from swarmd.supervisor import core
plain = core.Supervisor.run
def run(self):
    self.sink.attach(self.poller)
    return plain(self)
core.Supervisor.run = run
sys.exit(main(sys.argv[1:]))
"""


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--seconds", type=float, default=15.0)
    options.add_argument("--rate", type=int, default=65536, help="bytes of stderr read a second")
    options.add_argument("--swarmd", type=Path, default=REPO, help="a dir holding swarmd/")
    options.add_argument("--attach", action="store_true", help="sink.attach(poller) at start")
    args = options.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "swarmd.yaml"
        config.write_text(CONFIG)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(f"{tmp}/notify.sock")
        notify.setblocking(False)
        r, w = os.pipe()
        env = {**os.environ, "NOTIFY_SOCKET": f"{tmp}/notify.sock", "WATCHDOG_USEC": "1000000",
               "RUNTIME_DIRECTORY": f"{tmp}/run", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "apps"), str(args.swarmd)])}
        env.pop("JOURNAL_STREAM", None)
        command = [sys.executable, "-m", "swarmd", "run", "-c", str(config)]
        if args.attach:
            command[1:3] = ["-c", ATTACHED]
        proc = subprocess.Popen(command, stdout=w, stderr=w, env=env, cwd=tmp)
        os.close(w)
        os.set_blocking(r, False)
        pings: list[float] = []
        read = dropped = 0
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            try:
                data = os.read(r, max(1, args.rate // 20))
                read += len(data)
                dropped += data.count(b"dropped: stderr did not take them")
            except BlockingIOError:
                pass
            while True:
                try:
                    message = notify.recv(4096)
                except BlockingIOError:
                    break
                if b"WATCHDOG=1" in message:
                    pings.append(time.monotonic())
            time.sleep(0.05)  # ok-sleep: the slow reader's pace
        proc.send_signal(signal.SIGTERM)
        try:
            while proc.poll() is None:
                try:
                    os.read(r, 1 << 20)
                except BlockingIOError:
                    time.sleep(0.01)  # ok-sleep: drain until it exits
        finally:
            proc.wait(30)
            os.close(r)
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        if gaps:
            label = f"{args.swarmd}{' (attached)' if args.attach else ''}"
            print(f"{label}: {len(pings)} pings in {args.seconds:g}s, gap median "
                  f"{statistics.median(gaps):.3f}s max {max(gaps):.3f}s; stderr read "
                  f"{read} bytes at {args.rate} B/s, {dropped} drop count line(s)")
        else:
            print(f"{args.swarmd}: {len(pings)} pings in {args.seconds:g}s (the loop stalled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
