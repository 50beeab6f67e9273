"""Clients nobody here wrote, from Debian's `prometheus` package (bootstrap.sh installs it):
promtool judging what a running fleet's endpoint serves, and a real Prometheus server scraping
it, whose query API must return per-node series, a killed node's counter that never went back,
and the README's example queries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmd import __version__
from tests.process.harness import Swarm, base_config
from tests.waiting import wait_for

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NODES = 4


@pytest.fixture
def fleet(swarm) -> tuple[Swarm, int]:  # type: ignore[no-untyped-def]
    """A fleet of metrics_worker nodes serving /metrics on a port the kernel picked; yields
    the swarm and the port (from `status --json`)."""
    s = swarm(base_config(nodes=NODES, app="swarmd_testapps:metrics_worker",
                          env={"TESTAPP_PERIOD": "0.1"},
                          metrics={"listen": "127.0.0.1:0"}))
    s.wait_ready()
    listen = s.status()["metrics"]["listen"]
    return s, int(listen.rsplit(":", 1)[1])


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own loopback
        return answer.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is absent: apt-get install prometheus "
                                             "(bootstrap.sh does)")
def test_promtool_accepts_what_the_endpoint_serves(fleet: tuple[Swarm, int]) -> None:
    _, port = fleet
    body = wait_for(lambda: (b := fetch(f"http://127.0.0.1:{port}/metrics")) and
                    b'jobs_total{node="3",queue="a"}' in b and b, 10, "node 3's jobs counter")
    assert b'swarmd_node_up{node="3"} 1' in body and b'queue="we\\"ird\\\\"' in body
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.fixture
def prometheus(fleet: tuple[Swarm, int], tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the fleet every second; yields its base URL."""
    _, server = fleet
    if PROMETHEUS is None:
        pytest.skip("the prometheus server is absent: apt-get install prometheus "
                    "(bootstrap.sh does)")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      f"scrape_configs:\n  - job_name: swarmd\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{server}']\n")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                return fetch(base + "/-/ready").startswith(b"Prometheus Server is Ready")
            except OSError:
                return False

        wait_for(ready, 60, "Prometheus to be ready")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    answer = json.loads(fetch(base + "/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql})))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


def by_node(results: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["node"]: float(r["value"][1]) for r in results}


def test_a_real_prometheus_scrapes_per_node_series(prometheus: str,
                                                    fleet: tuple[Swarm, int]) -> None:
    s, _ = fleet
    def target_up() -> bool:
        targets = json.loads(fetch(prometheus + "/api/v1/targets"))["data"]["activeTargets"]
        return bool(targets) and targets[0]["health"] == "up" and targets[0]["lastError"] == ""

    wait_for(target_up, 60, "the scrape target to be up")
    up = query(prometheus, "swarmd_node_up")
    assert by_node(up) == {str(i): 1.0 for i in range(NODES)}
    assert all(set(r["metric"]) == {"__name__", "instance", "job", "node"} for r in up)
    assert query(prometheus, "swarmd_build_info")[0]["metric"]["version"] == __version__
    jobs = query(prometheus, 'jobs_total{queue="we\\"ird\\\\"}')
    assert set(by_node(jobs)) == {str(i) for i in range(NODES)}
    assert query(prometheus, 'job_seconds_bucket{node="2",le="+Inf"}')

    # node 1 is killed once Prometheus has its counter; its replacement counts on from there
    wait_for(lambda: query(prometheus, 'count_over_time(jobs_total{node="1",queue="a"}[5m])'
                                       ' >= 3'), 60, "3 samples of node 1's counter")
    os.kill(s.nodes()[1]["pid"], signal.SIGKILL)
    wait_for(lambda: query(prometheus, 'count_over_time(swarmd_node_generation{node="1"}[5m])'
                                       ' and swarmd_node_generation{node="1"} == 1'),
             60, "samples from after node 1's restart")
    wait_for(lambda: query(prometheus, 'count_over_time(jobs_total{node="1",queue="a"}[5m])'
                                       ' >= 5'), 60, "5 samples of node 1's counter")
    resets = query(prometheus, 'resets(jobs_total{node="1",queue="a"}[5m])')
    assert by_node(resets) == {"1": 0.0}

    # the README's example queries answer per node
    examples = {
        "restarts per node": "sum by (node) (increase(swarmd_node_restarts_total[1h]))",
        "memory per node": "swarmd_node_memory_bytes",
        "an app counter's rate": "sum by (node) (rate(jobs_total[1m]))",
        "p90 job time": "histogram_quantile(0.9, sum by (node, le) "
                        "(rate(job_seconds_bucket[1m])))",
    }
    for what, promql in examples.items():
        expected = {"1"} if what == "restarts per node" else {str(i) for i in range(NODES)}
        # memory is sampled every ~10 s per node: the replacement's first figure comes then
        wait_for(lambda q=promql, e=expected: set(by_node(query(prometheus, q))) == e, 40,
                 f"{what} ({promql}) answering for nodes {sorted(expected)}")
