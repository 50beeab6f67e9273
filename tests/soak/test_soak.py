"""CI's soak: `tests/soak/soak.py` for SWARMD_SOAK_SECONDS (default 60) under random faults."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.process.harness import REPO


def test_soak_recovers_from_every_fault_without_leaks():
    seconds = os.environ.get("SWARMD_SOAK_SECONDS", "60")
    result = subprocess.run([sys.executable, "-m", "tests.soak.soak", "--seconds", seconds],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=float(seconds) + 240)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "faults injected" in result.stdout
