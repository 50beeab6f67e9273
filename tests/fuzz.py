"""Settings of the property tests: `FUZZ` runs SWARMD_FUZZ_EXAMPLES examples (default 300, a
quick run), with no per-example deadline (speed is measured in bench/, never asserted)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("SWARMD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
