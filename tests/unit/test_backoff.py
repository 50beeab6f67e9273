"""swarmd.backoff: restart delays of one slot."""

from __future__ import annotations

import pytest

from swarmd.config import RestartPolicy
from swarmd.supervisor.backoff import Backoff


def backoff(delay: float = 1.0, max_delay: float = 60.0, reset_after: float = 60.0,
            give_up_after: int = 0) -> Backoff:
    return Backoff(RestartPolicy(delay=delay, max_delay=max_delay, reset_after=reset_after,
                                 give_up_after=give_up_after))


def failures(b: Backoff, count: int, healthy_for: float | None = None) -> list[float | None]:
    return [b.record_failure(healthy_for) for _ in range(count)]


def test_the_first_failure_restarts_at_once_then_delays_double_up_to_max_delay() -> None:
    assert failures(backoff(), 9) == [0, 1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(
    "delay, max_delay, expected",
    [
        (0.5, 3.0, [0.0, 0.5, 1.0, 2.0, 3.0]),
        (1.0, 1.0, [0.0, 1.0, 1.0, 1.0, 1.0]),
        (0.0, 0.0, [0.0] * 5),
        (0.0, 60.0, [0.0] * 5),  # delay 0 stays 0: restart at once, every time
    ],
)
def test_delay_table(delay: float, max_delay: float, expected: list[float]) -> None:
    assert failures(backoff(delay, max_delay), 5) == pytest.approx(expected)


@pytest.mark.parametrize("count, expected", [(0, 0.0), (-1, 0.0), (1, 0.0), (2, 1.0),
                                             (3, 2.0), (8, 60.0), (10_000, 60.0)])
def test_delay_of_a_failure_count(count: int, expected: float) -> None:
    assert backoff().delay(count) == expected


def test_many_failures_never_overflow() -> None:
    b = backoff(delay=1.0, max_delay=3600.0)
    assert failures(b, 5000)[-1] == 3600.0


@pytest.mark.parametrize("give_up_after", [1, 2, 3, 10])
def test_give_up_on_the_nth_failure_in_a_row(give_up_after: int) -> None:
    delays = failures(backoff(give_up_after=give_up_after), give_up_after)
    assert delays[-1] is None
    assert None not in delays[:-1]


def test_give_up_after_0_never_gives_up() -> None:
    assert None not in failures(backoff(give_up_after=0), 1000)


def test_a_healthy_stretch_of_reset_after_forgets_the_failures() -> None:
    b = backoff(reset_after=60.0)
    failures(b, 5)
    assert b.record_failure(healthy_for=60.0) == 0.0
    assert b.failures == 1
    assert b.record_failure(healthy_for=None) == 1.0


@pytest.mark.parametrize("healthy_for", [None, 0.0, 59.9])
def test_a_shorter_healthy_stretch_keeps_counting(healthy_for: float | None) -> None:
    b = backoff(reset_after=60.0)
    failures(b, 3)
    assert b.record_failure(healthy_for=healthy_for) == 4.0
    assert b.failures == 4


def test_a_healthy_stretch_saves_a_slot_from_giving_up() -> None:
    b = backoff(give_up_after=3, reset_after=10.0)
    assert failures(b, 2) == [0.0, 1.0]
    assert b.record_failure(healthy_for=10.0) == 0.0
    assert failures(b, 2) == [1.0, None]


def test_reset_forgets_the_failures() -> None:
    b = backoff(give_up_after=3)
    failures(b, 2)
    b.reset()
    assert b.failures == 0
    assert failures(b, 3) == [0.0, 1.0, None]
