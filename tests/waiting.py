"""Waiting on conditions with a deadline: the only way tests here wait for anything."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_INTERVAL = 0.02


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = POLL_INTERVAL
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    Raises ``AssertionError`` naming ``what`` (and the last value seen) once ``timeout`` seconds
    have passed. The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {value!r})"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))  # ok-sleep: poll
