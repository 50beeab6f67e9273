"""The text format 0.0.4: the fleet's series from a FleetSample, the apps' from the store,
escaping and label rules; and Debian's promtool, which nobody here wrote, judging the output."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from swarmd.metrics.exposition import (
    CONTENT_TYPE,
    FleetSample,
    Lateness,
    NodeSample,
    render,
)
from swarmd.metrics.names import format_value
from swarmd.metrics.store import MetricStore
from swarmd.node.protocol import HealthParser

PROMTOOL = shutil.which("promtool")


def fleet(nodes: int = 4) -> FleetSample:
    lateness = Lateness()
    for late in (0.0002, 0.003, 0.02, 0.7, -0.001):
        lateness.observe(late)
    return FleetSample(
        version="0.1.0",
        nodes=[NodeSample(id=i, up=i != 2, health_code=None if i == 2 else i % 2 * 3,
                          reports=100 + i, restarts={"hung": i, "exited": 1} if i else {},
                          recycles={"memory": 1} if i == 1 else {},
                          exits={"SIGKILL": i, "1": 1} if i else {},
                          cpu_seconds=1.5 * i, memory_bytes=None if i == 2 else 10_000_000 + i,
                          generation=i)
               for i in reversed(range(nodes))],
        reloads={"ok": 2, "rolled_back": 1},
        watchdog=lateness)


def app_store(nodes: int = 4) -> MetricStore:
    store = MetricStore()
    for node in range(nodes):
        parser = HealthParser()
        batch = parser.feed(
            b"t counter jobs Jobs done, by queue and result.\n"
            b"t gauge queue_depth Jobs waiting in the queue.\n"
            b"t histogram job_seconds 0.01,0.1,1,10 Seconds per job.\n"
            b't gauge odd_help A "help" with \\\\ and \\n in it.\n'
            + b"".join(b'c jobs{queue="q%d",result="ok"} %d\n' % (q, node * 10 + q)
                       for q in range(5))
            + b'c jobs{queue="q\\"1\\" \\\\ \\n",result="failed"} 1\n'
            + b'g queue_depth{queue="q1"} 3\ng odd_help NaN\ng queue_depth{queue="q2"} -Inf\n'
            + b"h job_seconds 10 4.5 2 3 4 1\no job_seconds 100\nc plain 1e21\n0\n")
        assert batch.errors == [], batch.errors
        assert batch.metrics is not None
        assert store.apply(node, batch.metrics) == []
    return store


def test_every_fleet_series_is_labelled_by_slot_never_by_pid() -> None:
    out = render(fleet(), None).decode()
    assert "pid" not in out
    for name in ("swarmd_node_up", "swarmd_node_health_code", "swarmd_node_reports_total",
                 "swarmd_node_restarts_total", "swarmd_node_recycles_total",
                 "swarmd_node_exits_total", "swarmd_node_cpu_seconds_total",
                 "swarmd_node_memory_bytes", "swarmd_node_generation"):
        assert out.count(f"# TYPE {name} ") == 1, name
        rows = [line for line in out.splitlines() if line.startswith(name + "{")]
        assert rows and all(row.startswith(name + '{node="') for row in rows), name
    assert 'swarmd_build_info{version="0.1.0"} 1\n' in out
    assert 'swarmd_node_restarts_total{node="3",reason="exited"} 1\n' \
           'swarmd_node_restarts_total{node="3",reason="hung"} 3\n' in out
    assert 'swarmd_reloads_total{result="ok"} 2\n' in out
    assert all(line.startswith(("# ", "swarmd_")) for line in out.splitlines())


def test_nodes_come_in_id_order_and_unknown_figures_are_left_out() -> None:
    out = render(fleet(), None).decode()
    assert ('swarmd_node_up{node="0"} 1\nswarmd_node_up{node="1"} 1\n'
            'swarmd_node_up{node="2"} 0\nswarmd_node_up{node="3"} 1\n') in out
    assert 'swarmd_node_health_code{node="2"}' not in out  # no report yet
    assert 'swarmd_node_memory_bytes{node="2"}' not in out
    assert 'swarmd_node_recycles_total{node="0"' not in out  # nothing to count


def test_watchdog_lateness_is_a_cumulative_histogram() -> None:
    out = render(fleet(), None).decode()
    name = "swarmd_watchdog_lateness_seconds"
    assert f"# TYPE {name} histogram\n" in out
    assert f'{name}_bucket{{le="0.001"}} 2\n' in out  # 0.0002 and the early one, as 0
    assert f'{name}_bucket{{le="0.005"}} 3\n' in out
    assert f'{name}_bucket{{le="0.05"}} 4\n' in out
    assert f'{name}_bucket{{le="1.0"}} 5\n' in out
    assert f'{name}_bucket{{le="+Inf"}} 5\n' in out
    assert f"{name}_count 5\n" in out


def test_no_watchdog_no_lateness_and_no_reloads_no_series() -> None:
    out = render(FleetSample("1", [NodeSample(0, True)]), None).decode()
    assert "lateness" not in out and "reloads" not in out


def test_every_app_type_with_the_node_label_first() -> None:
    out = render(None, app_store(2)).decode()
    assert "# TYPE jobs_total counter\n" in out
    assert "# TYPE queue_depth gauge\n" in out
    assert "# TYPE job_seconds histogram\n" in out
    assert 'jobs_total{node="1",queue="q3",result="ok"} 13.0\n' in out
    assert 'queue_depth{node="0",queue="q1"} 3.0\n' in out
    assert 'job_seconds_bucket{node="1",le="0.01"} 2.0\n' in out
    assert 'job_seconds_bucket{node="1",le="10.0"} 10.0\n' in out
    assert 'job_seconds_bucket{node="1",le="+Inf"} 11.0\n' in out
    assert 'job_seconds_sum{node="1"} 104.5\n' in out
    assert 'plain_total{node="0"} 1e+21\n' in out


def test_escaping_of_label_values_and_help() -> None:
    out = render(FleetSample('v"1\\\n', [NodeSample(0, True, restarts={'a"b': 1})]),
                 app_store(1)).decode()
    assert 'swarmd_build_info{version="v\\"1\\\\\\n"} 1\n' in out
    assert 'swarmd_node_restarts_total{node="0",reason="a\\"b"} 1\n' in out
    assert 'jobs_total{node="0",queue="q\\"1\\" \\\\ \\n",result="failed"} 1.0\n' in out
    assert '# HELP odd_help A "help" with \\\\ and \\n in it.\n' in out


def test_special_values() -> None:
    assert [format_value(v) for v in (float("nan"), float("inf"), -float("inf"), 1.0, 2,
                                      1e-7)] == ["NaN", "+Inf", "-Inf", "1.0", "2", "1e-07"]
    out = render(None, app_store(1)).decode()
    assert 'odd_help{node="0"} NaN\n' in out
    assert 'queue_depth{node="0",queue="q2"} -Inf\n' in out


def test_families_are_contiguous_with_one_help_and_type_each() -> None:
    out = render(fleet(), app_store()).decode()
    seen: list[str] = []
    current = None
    for line in out.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
            assert current not in seen
            seen.append(current)
        elif not line.startswith("#"):
            assert current is not None and line.startswith(current), (current, line)
    assert out.endswith("\n")


def test_the_content_type_is_the_text_formats() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is absent: apt-get install prometheus "
                                             "(bootstrap.sh does)")
def test_promtool_accepts_a_realistic_fleet_with_app_metrics() -> None:
    text = render(fleet(16), app_store(16))
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout == b"" and result.stderr == b""


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is absent: apt-get install prometheus "
                                             "(bootstrap.sh does)")
def test_promtool_would_catch_a_broken_exposition() -> None:
    """The check above can fail: promtool refuses what a careless writer would produce (a label
    value with its backslash not escaped)."""
    broken = b'# HELP x_total X.\n# TYPE x_total counter\nx_total{node="1",path="C:\\q"} 1\n'
    fine = b'# HELP x_total X.\n# TYPE x_total counter\nx_total{node="1",path="C:\\\\q"} 1\n'
    assert subprocess.run([PROMTOOL, "check", "metrics"], input=fine,
                          capture_output=True, timeout=60).returncode == 0
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=broken, capture_output=True,
                            timeout=60)
    assert result.returncode != 0
