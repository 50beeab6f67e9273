"""The demo app that etc/swarmd.yaml runs: a worker taking simulated jobs of varying length.

It shows the node API as an app should use it: report health at least once a second, finish
the job in hand when asked to stop (SIGTERM) or to quiet down (SIGTSTP), and take no new job
after either; a quieted worker has nothing left to do, so it returns.
"""

from __future__ import annotations

import os
import random
import time

from swarmd.api import Node

REPORT_EVERY = 1.0


def _work(node: Node, seconds: float, last_report: float) -> float:
    """Do one job of `seconds`, reporting on the way; returns the time of the last report."""
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        if now - last_report >= REPORT_EVERY:
            node.healthy()
            last_report = now
        time.sleep(min(end - now, REPORT_EVERY - (now - last_report), 0.25))
    return last_report


def run(node: Node) -> int:
    rng = random.Random(os.getpid())
    longest = float(os.environ.get("SWARMD_DEMO_JOB_SECONDS", "1.5"))
    node.log.info("node %d (generation %d) taking jobs", node.id, node.generation)
    node.healthy()
    last_report = time.monotonic()
    jobs = 0
    while not node.stopping.is_set() and not node.quieting.is_set():
        last_report = _work(node, rng.uniform(0.05, longest), last_report)
        jobs += 1
        if time.monotonic() - last_report >= REPORT_EVERY:
            node.healthy()
            last_report = time.monotonic()
    why = "stop" if node.stopping.is_set() else "quiet"
    node.log.info("node %d finished %d jobs; leaving on %s", node.id, jobs, why)
    return 0
