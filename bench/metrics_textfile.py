"""What starting the textfile writer costs the supervisor's loop, by the supervisor's memory:
posix_spawn of the writer (what swarmd.metrics.textfile does) against os.fork (which copies
the page tables), and against writing the file in the loop itself (cheapest on a healthy disk,
unbounded on a slow or hung one).

    .venv/bin/python bench/metrics_textfile.py [--sizes 0,200,500] [--rounds 40]

Each extra size is MiB allocated and touched, standing for a preloaded app. The three ways
alternate round by round (this machine is shared: interleaving spreads the noise). For each,
the median and p10 of the loop's wall time and of its CPU time (time.process_time) to start
the writer; the helper's own time to finish is not the loop's. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from swarmd.metrics.textfile import WRITER, spawn_python, temporary_path  # noqa: E402


def write_file(path: str, data: bytes) -> None:
    tmp = temporary_path(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.rename(tmp, path)


def by_spawn(path: str, body: bytes) -> int:
    pid, errors = spawn_python(WRITER, [path, temporary_path(path)], body)
    os.close(errors)
    return pid


def by_fork(path: str, body: bytes) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            write_file(path, body)
        finally:
            os._exit(0)
    return pid


def in_loop(path: str, body: bytes) -> int:
    write_file(path, body)
    return 0


def row(label: str, walls: list[float], cpus: list[float]) -> str:
    def p10(values: list[float]) -> float:
        return sorted(values)[len(values) // 10]

    return (f"  {label:<22} wall median {statistics.median(walls) * 1e3:6.2f} ms "
            f"(p10 {p10(walls) * 1e3:5.2f}), cpu median {statistics.median(cpus) * 1e3:6.2f} ms "
            f"(p10 {p10(cpus) * 1e3:5.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,200,500")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    body = b"x" * 400_000  # the exposition of 256 nodes x 20 series is about 400 KB
    ballast: list[bytearray] = []
    ways = [("posix_spawn (swarmd)", by_spawn), ("fork", by_fork), ("write in the loop", in_loop)]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "swarmd.prom")
        for size in (int(s) for s in args.sizes.split(",")):
            ballast.append(bytearray(os.urandom(1)) * (size << 20))  # touched: real pages
            samples: dict[str, tuple[list[float], list[float]]] = {w: ([], []) for w, _ in ways}
            for _ in range(args.rounds):
                for label, way in ways:
                    c0, w0 = time.process_time(), time.perf_counter()
                    pid = way(path, body)
                    samples[label][0].append(time.perf_counter() - w0)
                    samples[label][1].append(time.process_time() - c0)
                    if pid:
                        os.waitpid(pid, 0)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
            print(f"supervisor RSS ~{rss} MiB, a 400 KB file:")
            for label, _ in ways:
                print(row(label, *samples[label]))


if __name__ == "__main__":
    main()
