"""The metrics endpoint under the real unit: its sandbox still lets the supervisor listen on
loopback, and a scrape from inside the container shows every node's series and the app's."""

from __future__ import annotations

import re
import textwrap

import pytest

from tests.system.container import wait_for
from tests.system.swarmd_service import SERVICE_PYTHON, Swarmd

pytestmark = pytest.mark.system

PORT = 9105
SCRAPE = textwrap.dedent(f"""\
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:{PORT}/metrics", timeout=10) as reply:
        print(reply.read().decode())
    """)


def scrape(swarmd: Swarmd) -> str:
    out = swarmd.c.run(str(SERVICE_PYTHON), "-c", SCRAPE, check=False)
    return out.stdout if out.returncode == 0 else ""


def test_the_endpoint_serves_the_fleet_under_the_shipped_sandbox(swarmd: Swarmd) -> None:
    swarmd.start(nodes=3, app="swarmd_testapps:metrics_worker",
                 env={"TESTAPP_PERIOD": "0.1"}, metrics={"listen": f"127.0.0.1:{PORT}"})
    swarmd.wait_healthy(3)
    assert swarmd.status()["metrics"]["listen"] == f"127.0.0.1:{PORT}"
    text = wait_for(lambda: (t := scrape(swarmd)) and 'jobs_total{node="2",queue="a"}' in t
                    and t, 20, "a scrape with node 2's app counter")
    for node in range(3):
        assert f'swarmd_node_up{{node="{node}"}} 1' in text
    # under systemd the watchdog is on: its lateness is a histogram with samples
    count = re.search(r"^swarmd_watchdog_lateness_seconds_count (\d+)$", text, re.M)
    assert count is not None and int(count[1]) >= 1, text[-2000:]
    assert swarmd.events("swarmd.metrics") == []  # nothing to complain about
    swarmd.stop()
    assert scrape(swarmd) == ""  # the port is closed with the service


def test_healthy_nodes_beat_under_the_shipped_sandbox(swarmd: Swarmd) -> None:
    # The heartbeat table (a memfd shared with the nodes) works under the unit's seccomp filter
    # and user namespace: 3 nodes reporting 5 times a second (the test app reads its period
    # at import, which preload does in the supervisor: BASE_CONFIG's 0.2 s) are counted in full
    # while the supervisor is woken a handful of times (its watchdog ping every 5 s, our
    # requests).
    swarmd.start(nodes=3, metrics={"listen": f"127.0.0.1:{PORT}"})
    swarmd.wait_healthy(3)
    pid = swarmd.main_pid()
    fds = swarmd.c.run("ls", "-l", f"/proc/{pid}/fd").stdout
    assert "memfd:swarmd-heartbeats" in fds, fds

    def reports() -> float:
        text = scrape(swarmd)
        return sum(float(m[1]) for m in re.finditer(
            r'^swarmd_node_reports_total\{node="\d+"\} (\S+)$', text, re.M))

    def wakeups() -> int:
        status = swarmd.c.run("cat", f"/proc/{pid}/status").stdout
        return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", status, re.M)[1])  # type: ignore[index]

    counted, woken = reports(), wakeups()
    swarmd.c.run("sleep", "3")  # the window measured: nothing of ours wakes the supervisor
    woken, counted = wakeups() - woken, reports() - counted
    assert counted >= 30, counted  # ~45 reports in 3 s
    assert woken < 15, (woken, counted)
    assert all(n["report_age"] < 1.0 for n in swarmd.nodes().values())
