"""swarmd.health: the code table (code -> name, journal priority, action)."""

from __future__ import annotations

import pytest

from swarmd.config.health import PRIORITIES, HealthCode, HealthTable, priority_number

BACKLOG = HealthCode(2, "backlog", "notice", "log")
MEMORY = HealthCode(3, "memory_limit", "err", "restart")


def test_0_is_healthy_info_and_never_restarts() -> None:
    code = HealthTable()[0]
    assert (code.code, code.name, code.priority, code.action) == (0, "healthy", "info", "log")
    assert code.healthy
    assert not code.restarts
    assert code.number == 6


def test_1_is_unhealthy_err_restart() -> None:
    code = HealthTable()[1]
    assert (code.code, code.name, code.priority, code.action) == (1, "unhealthy", "err", "restart")
    assert not code.healthy
    assert code.restarts
    assert code.number == 3


def test_configured_codes_are_looked_up() -> None:
    table = HealthTable({2: BACKLOG, 3: MEMORY})
    assert table[2] is BACKLOG
    assert table[3] is MEMORY
    assert not table[2].restarts
    assert table[3].restarts


@pytest.mark.parametrize("code", [2, 4, 42, 254, 255])
def test_an_unknown_code_is_unhealthy_with_its_number_and_restarts(code: int) -> None:
    found = HealthTable({3: MEMORY})[code]
    assert found == HealthCode(code, "unhealthy", "err", "restart")
    assert found.restarts
    assert not found.healthy


def test_configured_codes_override_the_built_in_1_but_never_0() -> None:
    table = HealthTable({0: HealthCode(0, "odd", "crit", "restart"),
                         1: HealthCode(1, "failing", "crit", "log")})
    assert table[0].name == "healthy"
    assert not table[0].restarts
    assert table[1] == HealthCode(1, "failing", "crit", "log")
    assert not table[1].restarts


def test_the_table_is_a_sorted_mapping_of_built_in_and_configured_codes() -> None:
    table = HealthTable({3: MEMORY, 2: BACKLOG})
    assert list(table) == [0, 1, 2, 3]
    assert len(table) == 4
    assert len(HealthTable()) == 2
    assert len(HealthTable({1: HealthCode(1, "failing")})) == 2


def test_tables_compare_and_hash_by_their_codes() -> None:
    assert HealthTable({2: BACKLOG}) == HealthTable({2: BACKLOG})
    assert hash(HealthTable({2: BACKLOG})) == hash(HealthTable({2: BACKLOG}))
    assert HealthTable({2: BACKLOG}) != HealthTable({3: MEMORY})


@pytest.mark.parametrize("priority, number", list(zip(PRIORITIES, range(8), strict=True)))
def test_number_is_the_syslog_priority(priority: str, number: int) -> None:
    assert HealthCode(5, "x", priority).number == number
    assert priority_number(priority) == number


def test_the_syslog_priority_names_in_order() -> None:
    assert PRIORITIES == ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def test_a_code_defaults_to_err_restart() -> None:
    code = HealthCode(9, "x")
    assert (code.priority, code.action, code.number, code.restarts) == ("err", "restart", 3, True)
