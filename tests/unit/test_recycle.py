"""The recycle decision (swarmd.supervisor.recycle): memory, lifetime with its per-slot spread,
and a clean exit after restart.reset_after."""

from __future__ import annotations

import pytest

from swarmd.config.limits import Limits
from swarmd.supervisor.recycle import (
    LIFETIME_SPREAD,
    Recycle,
    RecycleReason,
    exit_is_recycle,
    lifetime_of,
    to_recycle,
)

M = 1 << 20
HOUR = 3600.0


def test_no_limits_no_recycle() -> None:
    assert to_recycle(10**12, 10**9, Limits(), slot=0, generation=0) is None


def test_memory_above_the_limit() -> None:
    limits = Limits(memory=512 * M)
    assert to_recycle(512 * M, 1.0, limits, 0, 0) is None  # at it is not over it
    assert to_recycle(None, 1.0, limits, 0, 0) is None  # no figure yet
    assert to_recycle(612 * M, 1.0, limits, 3, 1) == Recycle(
        RecycleReason.MEMORY, "memory 612M above limits.memory 512M")


def test_memory_wins_over_lifetime() -> None:
    limits = Limits(memory=M, lifetime=60.0)
    assert to_recycle(2 * M, 3600.0, limits, 0, 0).reason is RecycleReason.MEMORY


def test_lifetime_reached() -> None:
    limits = Limits(lifetime=6 * HOUR)
    own = lifetime_of(3, 2, 6 * HOUR)
    assert to_recycle(None, own - 0.001, limits, 3, 2) is None
    recycle = to_recycle(None, own, limits, 3, 2)
    assert recycle is not None and recycle.reason is RecycleReason.LIFETIME
    assert "(limits.lifetime 6h)" in recycle.figure
    assert to_recycle(None, 6 * HOUR, limits, 3, 2) is not None  # the full lifetime: always


@pytest.mark.parametrize("slot, generation", [(0, 0), (1, 0), (0, 1), (4095, 77), (10**6, 3)])
def test_lifetime_spread_is_within_ten_percent_and_stable(slot: int, generation: int) -> None:
    lifetime = lifetime_of(slot, generation, 1000.0)
    assert 1000.0 * (1 - LIFETIME_SPREAD) <= lifetime <= 1000.0
    assert lifetime_of(slot, generation, 1000.0) == lifetime  # the same for the same pair


def test_lifetime_values_are_pinned() -> None:
    # Deterministic across processes and Python versions (no hash()): pinned values.
    assert [round(lifetime_of(slot, 0, 100.0), 2) for slot in range(4)] == [
        98.43, 92.69, 90.69, 92.34]


def test_lifetime_spreads_a_fleet() -> None:
    lifetimes = [lifetime_of(slot, 0, 1000.0) for slot in range(64)]
    assert len({round(x, 3) for x in lifetimes}) == 64  # no two slots expire together
    assert max(lifetimes) - min(lifetimes) > 80.0  # and they use most of the 10 %
    assert lifetime_of(5, 0, 1000.0) != lifetime_of(5, 1, 1000.0)  # each generation anew


@pytest.mark.parametrize("code, ran_for, asked, recycled", [
    (0, 60.0, False, True),  # exactly reset_after
    (0, 3600.0, False, True),
    (0, 59.9, False, False),  # too soon: a failure (a loop that exits 0 is still a loop)
    (1, 3600.0, False, False),  # failed
    (None, 3600.0, False, False),  # killed by a signal
    (0, 3600.0, True, False),  # asked to stop: not a recycle, a stop
])
def test_clean_exit(code: int | None, ran_for: float, asked: bool, recycled: bool) -> None:
    result = exit_is_recycle(code, ran_for, reset_after=60.0, asked_to_stop=asked)
    assert (result is not None) is recycled
    if result is not None:
        assert result.reason is RecycleReason.CLEAN_EXIT
        assert result.figure == f"exited 0 by itself after {'1m' if ran_for == 60 else '1h'} " \
                                f"(restart.reset_after 1m)"
