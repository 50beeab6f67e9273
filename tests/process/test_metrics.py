"""The metrics endpoint of a running fleet: the fleet's series, app metrics from Python and
command nodes, counters that never go back across a kill, and what a scraper or a node can
not do to the supervisor (stall its loop, grow it without bound)."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request

from tests.process.harness import Swarm, Watch, base_config, wait_for, watchdog_gaps

WATCHDOG_USEC = 400_000  # a ping every 0.2 s: a loop stalled for 0.4 s shows


def metrics_config(**overrides):  # type: ignore[no-untyped-def]
    config = base_config(**overrides)
    config.setdefault("metrics", {"listen": "127.0.0.1:0"})
    return config


def port_of(s: Swarm) -> int:
    return int(s.status()["metrics"]["listen"].rsplit(":", 1)[1])


def scrape(s: Swarm) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port_of(s)}/metrics",  # noqa: S310
                                timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return answer.read().decode()


def value(text: str, series: str) -> float | None:
    """The sample of one series (`name{labels}` exactly as exposed), or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_fleet_series_follow_a_kill(swarm):
    s = swarm(metrics_config(nodes=3))
    s.wait_ready()
    text = scrape(s)
    for node in range(3):
        assert value(text, f'swarmd_node_up{{node="{node}"}}') == 1
        assert value(text, f'swarmd_node_health_code{{node="{node}"}}') == 0
    assert re.search(r'^swarmd_build_info\{version="[^"]+"\} 1$', text, re.M)
    assert "pid" not in text  # series are labelled by slot, never by process
    before = value(text, 'swarmd_node_reports_total{node="1"}')
    assert before is not None and before >= 1

    os.kill(s.nodes()[1]["pid"], signal.SIGKILL)
    s.wait_node(1, lambda n: n["generation"] == 1 and n["health"] == "healthy")
    # an answer is served again for up to 0.5 s (many scrapers, one render): the next one
    text = wait_for(lambda: (t := scrape(s)) and value(t, 'swarmd_node_generation{node="1"}')
                    == 1 and t, 5, "a scrape from after the restart")
    assert value(text, 'swarmd_node_restarts_total{node="1",reason="exited"}') == 1
    assert value(text, 'swarmd_node_exits_total{node="1",status="SIGKILL"}') == 1
    assert value(text, 'swarmd_node_generation{node="1"}') == 1
    after = value(text, 'swarmd_node_reports_total{node="1"}')
    assert after is not None and after >= before  # the dead node's reports still count
    assert value(text, 'swarmd_node_restarts_total{node="0",reason="exited"}') is None


def test_app_metrics_of_python_nodes_continue_across_a_kill(swarm):
    s = swarm(metrics_config(nodes=2, app="swarmd_testapps:metrics_worker",
                             env={"TESTAPP_PERIOD": "0.05"}))
    s.wait_ready()
    series = 'jobs_total{node="1",queue="a"}'
    first = wait_for(lambda: value(scrape(s), series), 10, "node 1's counter")
    assert value(scrape(s), 'jobs_total{node="1",queue="we\\"ird\\\\"}') is not None
    os.kill(s.nodes()[1]["pid"], signal.SIGKILL)
    seen = [first]
    deadline = time.monotonic() + 30
    while True:  # every scrape from the kill on: never below one before it
        text = scrape(s)
        current = value(text, series)
        assert current is not None and current >= seen[-1], (seen, current)
        seen.append(current)
        if value(text, 'swarmd_node_generation{node="1"}') == 1 and current > first + 20:
            break  # the replacement counted on from where its slot was
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)  # ok-sleep: pacing the scrapes
    # the dead node's gauge went with it; its replacement sets its own
    assert value(text, 'queue_depth{node="1"}') is not None
    assert re.search(r'^job_seconds_bucket\{node="1",le="\+Inf"\} \d', text, re.M)


def test_app_metrics_of_a_command_node(swarm, tmp_path):
    script = tmp_path / "worker.sh"
    script.write_text('echo "t counter shell_jobs Jobs done by the shell." >&3\n'
                      'while true; do echo "c shell_jobs{kind=\\"x\\"} 2" >&3; echo 0 >&3; '
                      'sleep 0.1; done\n')
    config = metrics_config(nodes=1, command=["sh", str(script)])
    del config["app"]
    s = swarm(config)
    s.wait_ready()
    text = wait_for(lambda: (t := scrape(s)) and (value(t, 'shell_jobs_total{node="0",kind="x"}')
                                                 or 0) >= 4 and t, 10, "the shell's counter")
    assert "# HELP shell_jobs_total Jobs done by the shell." in text
    assert "# TYPE shell_jobs_total counter" in text


def test_a_stuck_scraper_and_half_open_clients_leave_the_watchdog_on_time(swarm):
    s = swarm(metrics_config(nodes=4, app="swarmd_testapps:metrics_worker",
                             env={"TESTAPP_SERIES": "1500"}),
              watchdog_usec=WATCHDOG_USEC)
    s.wait_ready()
    port = port_of(s)
    wait_for(lambda: len(scrape(s)) > 200_000, 10, "a large exposition")
    watch = Watch(s)
    half_open = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    for sock in half_open[:8]:
        sock.sendall(b"GET /metr")  # a request begun, never finished
    stuck = []
    for _ in range(4):  # scrapers that ask and never read what is a big answer
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        stuck.append(sock)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert len(scrape(s)) > 200_000  # others are served meanwhile
        time.sleep(0.2)  # ok-sleep: a scraper's pace while the stuck ones wait
    gaps = watchdog_gaps(watch.stop())
    for sock in half_open + stuck:
        sock.close()
    assert gaps and max(gaps) < WATCHDOG_USEC / 1e6, gaps
    assert s.proc.poll() is None


def test_a_node_inventing_label_values_is_cut_off_and_told_once(swarm):
    s = swarm(metrics_config(nodes=2, app="swarmd_testapps:metrics_worker",
                             env={"TESTAPP_METRICS_FLOOD": "1", "TESTAPP_ONLY_NODE": "0",
                                  "TESTAPP_PERIOD": "0.02"},
                             metrics={"listen": "127.0.0.1:0", "max_series_per_node": 300}),
              watchdog_usec=WATCHDOG_USEC)
    s.wait_ready()
    watch = Watch(s)
    text = wait_for(lambda: (t := scrape(s)) and (value(
        t, 'swarmd_metrics_refused_total{node="0"}') or 0) > 1000 and t, 20,
        "node 0's refused updates counted")
    assert value(text, 'swarmd_metrics_series{node="0"}') <= 300
    assert value(text, 'swarmd_metrics_refused_total{node="1"}') == 0
    assert value(text, 'jobs_total{node="1",queue="a"}') is not None
    time.sleep(1)  # ok-sleep: the flood goes on; the supervisor's word must stay one entry
    out = s.output()
    told = re.findall(r"node 0 .*metrics\.max_series_per_node.*", out)
    assert len(told) == 1, told or out[-2000:]
    gaps = watchdog_gaps(watch.stop())
    assert gaps and max(gaps) < WATCHDOG_USEC / 1e6, gaps


def test_a_deploy_keeps_the_port_and_every_counter(swarm):
    """The supervisor re-executes itself at the end of a deploy: the listening socket and the
    counts cross the exec, so a scraper sees no gap in the port and no counter going back."""
    import subprocess
    import sys

    s = swarm(metrics_config(nodes=2, app="swarmd_testapps:metrics_worker",
                             env={"TESTAPP_PERIOD": "0.05"}))
    s.wait_ready()
    port = port_of(s)
    os.kill(s.nodes()[0]["pid"], signal.SIGKILL)
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy")
    before = wait_for(lambda: (t := scrape(s)) and value(
        t, 'swarmd_node_restarts_total{node="0",reason="exited"}') == 1 and t, 5,
        "the restart counted")
    done = subprocess.run([sys.executable, "-m", "swarmd", "reload", "--runtime-dir",
                           str(s.runtime)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert port_of(s) == port
    after = wait_for(lambda: (t := scrape(s)) and value(
        t, 'swarmd_reloads_total{result="deployed"}') == 1 and t, 10, "the deploy counted")
    assert value(after, 'swarmd_node_restarts_total{node="0",reason="exited"}') == 1
    for node in (0, 1):
        series = f'jobs_total{{node="{node}",queue="a"}}'
        assert value(after, series) >= value(before, series), series
        reports = f'swarmd_node_reports_total{{node="{node}"}}'
        assert value(after, reports) >= value(before, reports), reports
    # the deploy's replacements ended their slots' old nodes on purpose: exit 0 counted
    assert value(after, 'swarmd_node_exits_total{node="1",status="0"}') == 1
