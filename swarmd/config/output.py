"""The `output:` section: how many lines of its output a node may send to the log.

```yaml
output:
  rate: 200/s        # lines a node may write on average: a number (per second), "N/s", "N/m",
                     # "N/h", or "unlimited"
  burst: 2000        # lines a node may write at once above the rate
```
What a node writes beyond it is dropped by swarmd and counted in a `node.output_dropped`
entry, so that one node flooding its stdout neither drowns the other nodes' lines nor the
supervisor's own entries (journald's rate limit is per unit: it would drop those too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from swarmd.config.checker import Checker, describe

MAX_RATE = 1_000_000.0  # lines per second; more is no limit at all: say "unlimited"
MAX_BURST = 10_000_000
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


class OutputLimit(NamedTuple):
    rate: float | None = 200.0  # lines per second per node; None: unlimited
    burst: int = 2000

    def describe(self) -> str:
        """How the limit reads in a message: "output.rate 200/s, output.burst 2000"."""
        if self.rate is None:
            return "output.rate unlimited"
        return f"output.rate {self.rate:g}/s, output.burst {self.burst}"


def parse_output(data: Any, c: Checker) -> OutputLimit:
    """The section's values; every problem goes to the checker with its key path."""
    section: Mapping[Any, Any] = c.mapping(data, "output")
    c.unknown_keys(section, ("rate", "burst"), "output.")
    default = OutputLimit()
    rate = default.rate
    if "rate" in section:
        rate = _rate(section["rate"], c, default.rate)
    burst = c.integer(section, "burst", "output.", default.burst, 1, MAX_BURST)
    return OutputLimit(rate=rate, burst=burst)


def _rate(value: Any, c: Checker, default: float | None) -> float | None:
    if value == "unlimited":
        return None
    per_second: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        per_second = float(value)
    elif isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match:
            per_second = float(match.group(1)) / _PER[match.group(2)]
    if per_second is None or not math.isfinite(per_second):
        c.problem("output.rate", f'expected lines per second like 200, "200/s", "5000/m" or '
                                 f'"unlimited", got {describe(value)}')
        return default
    if not 0 < per_second <= MAX_RATE:
        c.problem("output.rate", f"must be above 0 and at most {MAX_RATE:.0f} lines per second "
                                 f'(or "unlimited"), got {describe(value)}')
        return default
    return per_second
