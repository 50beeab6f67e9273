"""How long swarmd.config takes on hostile input: the worst time per input, with libyaml's parser
and with the pure one.

    .venv/bin/python bench/config_fuzz.py [--examples N]

Two parts: the fuzz strategies of tests/unit/test_config_fuzz.py (N examples each, and every
outcome checked as the test does), then crafted worst cases at the bounds (a 1 MiB file, the
most values allowed, the deepest nesting, alias bombs). Prints one line per part and loader;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swarmd.config import ConfigError, document, parse  # noqa: E402
from tests.unit.test_config_fuzz import any_text, check_outcome, outcome_of  # noqa: E402


def crafted() -> dict[str, str]:
    big = document.MAX_BYTES - 20
    most = document.MAX_VALUES // 2 - 4
    return {
        "512 KiB string": "app: '" + "x" * big + "'\n",
        "512 KiB comment": "#" * big + "\nnodes: 2\n",
        f"{document.MAX_VALUES} values (list)": "a: [" + "1," * (document.MAX_VALUES - 5) + "]\n",
        f"{most} env vars": "env:\n" + "".join(f"  V{i}: x\n" for i in range(most)),
        "twice the values allowed": "a:\n" + "- xx\n" * (2 * document.MAX_VALUES),
        "nesting at the bound": "a: " + "[" * 63 + "]" * 63 + "\n",
        "512 KiB of [": "[" * big,
        "alias bomb": "a: &a {k: v}\n" + "".join(
            f"{n}: &{n} {{p: *{p}, q: *{p}, r: *{p}, s: *{p}}}\n"
            for p, n in zip("abcdefghi", "bcdefghij", strict=True)),
        "512 KiB of one key": "{" + "a" * big,
    }


def timed(text: str) -> float:
    start = time.perf_counter()
    check_outcome(outcome_of(parse, text, "cfg.yaml"))
    return time.perf_counter() - start


def fuzz(examples: int) -> tuple[float, int, str]:
    worst: list[tuple[float, str]] = [(0.0, "")]
    count = [0]

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=any_text)
    def run(text: str) -> None:
        count[0] += 1
        seconds = timed(text)
        if seconds > worst[0][0]:
            worst[0] = (seconds, text)

    run()
    return worst[0][0], count[0], worst[0][1]


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--examples", type=int, default=2000)
    args = options.parse_args()
    loaders = {"libyaml": getattr(yaml, "CSafeLoader", None), "pure": yaml.SafeLoader}
    for name, base in loaders.items():
        if base is None:
            print(f"{name}: not available")
            continue
        document.LOADER = document.make_loader(base)
        seconds, count, text = fuzz(args.examples)
        print(f"{name:8} fuzz: {count} inputs, worst {seconds * 1000:.1f} ms "
              f"({len(text)} chars: {text[:60]!r})")
        for label, text in crafted().items():
            seconds = timed(text)
            try:
                parse(text, "cfg.yaml")
                verdict = "accepted"
            except ConfigError as exc:
                verdict = exc.problems[0][:70]
            print(f"{name:8} {label:28} {len(text):8} chars {seconds * 1000:8.1f} ms  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
