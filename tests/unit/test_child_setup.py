"""What the supervisor works out for a child before the fork."""

from __future__ import annotations

import pytest

from swarmd.node.spawn import fd_runs


@pytest.mark.parametrize(("fds", "runs"), [
    ([], []),
    ([7], [(7, 8)]),
    ([3, 4, 5, 9, 10], [(3, 6), (9, 11)]),
    ([10, 4, 3, 5, 9, 4], [(3, 6), (9, 11)]),  # unsorted, with a duplicate
    ([3, 5, 7], [(3, 4), (5, 6), (7, 8)]),
])
def test_fds_become_runs_of_consecutive_numbers(fds: list[int], runs: list[tuple[int, int]]
                                                ) -> None:
    assert fd_runs(fds) == runs
