"""Restart backoff of one slot: exponential delays, forgotten after a healthy stretch."""

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
        """delay * 2^(failures-1), capped at max_delay; 0 stays 0 (restart at once)."""
        if self.policy.delay <= 0 or failures <= 0:
            return 0.0
        return min(self.policy.delay * 2 ** min(failures - 1, 60), self.policy.max_delay)

    def reset(self) -> None:
        self.failures = 0
