"""swarmd.status: the STATUS= line and the `swarmd status` table."""

from __future__ import annotations

import json

import pytest

from swarmd.supervisor.status import NodeRow, format_table, format_uptime, summary_text

NOW = 1_700_000_000.0


def row(id: int = 0, pid: int | None = 100, state: str = "running", code: int | None = 0,
        health: str | None = "healthy", restarts: int = 0, started: float | None = NOW - 5,
        generation: int = 0) -> NodeRow:
    return NodeRow(id=id, pid=pid, state=state, code=code, health=health, restarts=restarts,
                   started=started, generation=generation)


@pytest.mark.parametrize(
    "kwargs, healthy",
    [
        ({}, True),
        ({"state": "draining"}, True),
        ({"state": "booting", "code": None, "health": None}, False),
        ({"state": "stopping"}, False),
        ({"code": 1, "health": "unhealthy"}, False),
        ({"code": None, "health": None}, False),
        ({"pid": None, "state": "exited"}, False),
    ],
)
def test_a_row_is_healthy_when_running_and_reporting_0(kwargs: dict, healthy: bool) -> None:
    assert row(**kwargs).healthy is healthy


def status_text(rows: list[NodeRow], restarts: int, mode: str) -> str:
    """The STATUS= line for these rows: the supervisor counts with the same rule."""
    return summary_text(sum(1 for r in rows if r.healthy), len(rows), restarts, mode)


def test_status_text_counts_healthy_nodes_and_restarts() -> None:
    rows = [row(0), row(1), row(2), row(3, code=3, health="memory_limit")]
    assert status_text(rows, 2, "running") == "3/4 healthy, 2 restarts"


@pytest.mark.parametrize("restarts, text", [(0, "0 restarts"), (1, "1 restart"),
                                            (12, "12 restarts")])
def test_status_text_plural(restarts: int, text: str) -> None:
    assert status_text([row()], restarts, "running") == f"1/1 healthy, {text}"


@pytest.mark.parametrize("mode", ["quiet", "reloading", "stopping"])
def test_status_text_names_any_mode_but_running(mode: str) -> None:
    assert status_text([row(), row(1, pid=None, state="exited")], 1, mode) == (
        f"1/2 healthy, 1 restart, {mode}")


def test_status_text_of_no_nodes() -> None:
    assert status_text([], 0, "running") == "0/0 healthy, 0 restarts"


@pytest.mark.parametrize(
    "seconds, text",
    [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (61, "1m01s"), (3599, "59m59s"),
     (3600, "1h00m"), (86399, "23h59m"), (86400, "1d00h"), (90061, "1d01h"), (864000, "10d00h")],
)
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert format_uptime(seconds) == text


def test_format_table_is_aligned_with_a_header() -> None:
    rows = [
        row(0, pid=812, restarts=0, started=NOW - 75),
        row(1, pid=None, state="exited", code=None, health=None, restarts=3, started=None,
            generation=3),
        row(12, pid=99999, code=3, health="memory_limit", restarts=1, started=NOW - 7200,
            generation=1),
    ]
    rows[0] = rows[0]._replace(cpu=12.345, memory=52_428_800, memory_source="pss")
    rows[2] = rows[2]._replace(cpu=180.0, memory=1_288_490_189)
    assert format_table(rows, now=NOW).splitlines() == [
        "ID  PID    STATE    HEALTH          RESTARTS  GEN  UPTIME  CPU    MEMORY",
        "0   812    running  0 healthy       0         0    1m15s   12.3%  50.0M",
        "1   -      exited   -               3         3    -       -      -",
        "12  99999  running  3 memory_limit  1         1    2h00m   180%   1.20G",
    ]


def test_a_rows_figures_in_json_are_rounded_and_none_until_known() -> None:
    data = row(0, pid=812, started=NOW - 75)._replace(cpu=12.3456, memory=1000).to_dict(NOW)
    assert (data["cpu"], data["memory"], data["memory_source"]) == (12.35, 1000, None)
    assert row(1, pid=812, started=NOW)._asdict()["cpu"] is None


def test_format_table_of_no_nodes_is_the_header() -> None:
    assert format_table([], now=NOW) == (
        "ID  PID  STATE  HEALTH  RESTARTS  GEN  UPTIME  CPU  MEMORY")


def test_format_table_lines_have_no_trailing_spaces() -> None:
    text = format_table([row(started=None), row(1, code=None, health=None)], now=NOW)
    assert all(line == line.rstrip() for line in text.splitlines())


def test_to_dict_adds_the_uptime() -> None:
    data = row(3, pid=812, started=NOW - 12.3456, generation=2, restarts=2).to_dict(now=NOW)
    assert data == {"id": 3, "pid": 812, "state": "running", "code": 0, "health": "healthy",
                    "restarts": 2, "started": NOW - 12.3456, "generation": 2, "uptime": 12.346,
                    "cpu": None, "memory": None, "memory_source": None, "report_age": None}


def test_to_dict_uptime_is_none_when_not_started() -> None:
    assert row(started=None).to_dict(now=NOW)["uptime"] is None


@pytest.mark.parametrize(
    "original",
    [row(), row(7, pid=None, state="exited", code=None, health=None, restarts=4, started=None,
                generation=4)],
)
def test_from_dict_round_trips_through_json(original: NodeRow) -> None:
    data = json.loads(json.dumps(original.to_dict(now=NOW)))
    assert NodeRow.from_dict(data) == original
