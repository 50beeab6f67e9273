"""One deploy of 8 nodes, step by step: ms from the HUP to each slot's new first report, and to
READY=1 (which comes from the supervisor re-executed into the new code).

    .venv/bin/python bench/deploy.py [--nodes 8] [--rounds 3]

The nodes are bench/swarmd_benchapp.py's quick_quiet (a quieted node leaves at once), so what
is measured is swarmd's part: the candidate's start and load, each slot's drain, fork and first
report, and the hand-over at the end. Times are the nodes' own CLOCK_MONOTONIC stamps and the
kernel's arrival stamps of the notify datagrams (bench/run.py's Inbox).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench_run  # noqa: E402 - the bench's own harness, next to this file

MS = 1e6


def one_deploy(root: Path, nodes: int, preload: bool) -> tuple[list[float], float, float]:
    """(ms to each slot's new first report, ms to READY=1, ms of the candidate's load)."""
    instance = bench_run.Instance("swarmd", nodes, "swarmd_benchapp:quick_quiet", root,
                                  bench_run.REPO, config={"preload": preload,
                                                          "timeouts": {"drain": "5s"}})
    try:
        instance.wait_ready()
        inbox = instance.inbox
        readies = sum(1 for _, k, _ in inbox.notify if k == "READY")
        before = {slot: up.pid for slot, up in inbox.ups.items()}
        hup = bench_run.time.monotonic_ns()
        os.kill(instance.pid, signal.SIGHUP)
        inbox.wait(lambda: sum(1 for _, k, _ in inbox.notify if k == "READY") > readies
                   and all(inbox.ups[s].pid != before[s] for s in before), 120,
                   "the deploy's READY=1 and a new node in every slot")
        ready = [t for t, k, _ in inbox.notify if k == "READY"][readies]
        firsts = [(inbox.ups[s].t - hup) / MS for s in sorted(before)]
        drained = [t for t, k, v in inbox.notify if k == "STATUS" and "slot 0," in v and t > hup]
        load = (drained[0] - hup) / MS if drained else float("nan")
        return firsts, (ready - hup) / MS, load
    finally:
        instance.stop()
        instance.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="swarmd-deploy-bench-") as tmp:
        for preload in (True, False):
            runs = [one_deploy(Path(tmp), args.nodes, preload) for _ in range(args.rounds)]
            med = [statistics.median(r[0][i] for r in runs) for i in range(args.nodes)]
            print(f"preload {str(preload).lower()}, {args.nodes} nodes, median of "
                  f"{args.rounds} deploys (ms from HUP)")
            print(f"  candidate loaded (slot 0 draining): "
                  f"{statistics.median(r[2] for r in runs):.0f}")
            print("  slot new first report: " + ", ".join(f"{i}: {t:.0f}"
                                                          for i, t in enumerate(med)))
            print(f"  READY=1 (new supervisor code): {statistics.median(r[1] for r in runs):.0f}"
                  f"  (runs: {', '.join(f'{r[1]:.0f}' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
