"""Restart backoff of one slot: the first failure in a row restarts at once (a crash now and
then costs no wait, as with gunicorn), the next ones wait restart.delay, then twice that, and
so on up to max_delay; a healthy stretch of reset_after forgets them."""

from __future__ import annotations

from swarmd.config import RestartPolicy


class Backoff:
    """Counts failures in a row; `restart.reset_after` of health forgets them."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def record_failure(self, healthy_for: float | None) -> float | None:
        """Count one failure; the delay before the next start, or None to give up.

        `healthy_for` is how long the failed process had been healthy without a break."""
        if healthy_for is not None and healthy_for >= self.policy.reset_after:
            self.failures = 0
        self.failures += 1
        limit = self.policy.give_up_after
        if limit and self.failures >= limit:
            return None
        return self.delay(self.failures)

    def delay(self, failures: int) -> float:
        """0 for the first failure in a row, then delay * 2^(failures-2), capped at
        max_delay; a delay of 0 restarts at once every time."""
        if self.policy.delay <= 0 or failures <= 1:
            return 0.0
        return min(self.policy.delay * 2 ** min(failures - 2, 60), self.policy.max_delay)

    def reset(self) -> None:
        self.failures = 0
