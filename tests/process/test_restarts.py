"""Deaths, health codes, hangs and crash loops: what gets replaced, when, and how often."""

from __future__ import annotations

import os
import re
import signal

from tests.process.harness import base_config, pid_alive, wait_for, zombies


def test_killed_node_is_replaced_in_its_slot_with_next_generation(swarm):
    s = swarm(base_config(nodes=3))
    s.wait_ready()
    before = s.nodes()[1]
    os.kill(before["pid"], signal.SIGKILL)
    after = s.wait_node(1, lambda n: n["pid"] != before["pid"] and n["health"] == "healthy",
                        what="node 1 replaced and healthy")
    assert after["generation"] == before["generation"] + 1
    assert after["restarts"] == 1
    assert s.nodes()[0]["pid"] != after["pid"] and s.nodes()[0]["generation"] == 0
    assert not pid_alive(before["pid"])
    assert zombies(s.pid) == []
    assert "node 1 killed by SIGKILL" in s.output()


def test_restart_code_replaces_node_and_log_code_leaves_it_running(swarm):
    s = swarm(base_config(
        nodes=2, app="swarmd_testapps:code_once",
        env={"TESTAPP_ONLY_GEN": "0"},
        health={"codes": {2: {"name": "backlog", "priority": "notice", "action": "log"},
                          3: {"name": "memory_limit", "priority": "err",
                              "action": "restart"}}}))
    s.wait_ready()
    first = s.nodes()
    # Both nodes report code 3 once (generation 0 only): both are replaced.
    for node_id in (0, 1):
        s.wait_node(node_id, lambda n: n["generation"] == 1 and n["health"] == "healthy",
                    what=f"node {node_id} replaced after memory_limit")
    out = s.output()
    assert "node 0: healthy (0) -> memory_limit (3): restart" in out
    assert all(not pid_alive(first[i]["pid"]) for i in (0, 1))


def test_log_code_is_journaled_and_node_keeps_running(swarm):
    s = swarm(base_config(
        nodes=1, app="swarmd_testapps:code_once",
        env={"TESTAPP_CODE": "2", "TESTAPP_ONLY_GEN": "0"},
        health={"codes": {2: {"name": "backlog", "priority": "notice", "action": "log"}}}))
    s.wait_ready()
    pid = s.nodes()[0]["pid"]
    s.wait_output("node 0: healthy (0) -> backlog (2)")
    s.wait_output("node 0: backlog (2) -> healthy (0)")
    assert s.nodes()[0]["pid"] == pid and s.nodes()[0]["generation"] == 0


def test_silent_node_is_replaced_after_report_timeout(swarm):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:silent",
                          env={"TESTAPP_ONLY_NODE": "0", "TESTAPP_ONLY_GEN": "0"},
                          timeouts={"report": "1s", "boot": "120s"}))
    # boot is far beyond the wait below: the report deadline, not the boot one, must fire.
    s.wait_ready()
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy", timeout=20,
                what="hung node 0 replaced")
    assert "node 0 is hung (no report within timeouts.report = 1s): TERM" in s.output()


def test_silent_node_ignoring_term_is_killed_after_report_plus_shutdown(swarm):
    s = swarm(base_config(nodes=1, app="swarmd_testapps:silent",
                          env={"TESTAPP_ONLY_GEN": "0", "TESTAPP_IGNORE_TERM": "1"},
                          timeouts={"report": "1s", "shutdown": "1s"}))
    s.wait_ready()
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy", timeout=20,
                what="hung, TERM-ignoring node 0 killed and replaced")
    out = s.output()
    assert "node 0 is hung" in out
    assert "did not exit within timeouts.shutdown (1s) after TERM: KILL" in out


def test_node_that_never_reports_is_replaced_after_boot_timeout(swarm):
    s = swarm(base_config(nodes=1, app="swarmd_testapps:slow_boot",
                          env={"TESTAPP_ONLY_GEN": "0"}, timeouts={"boot": "1s"}))
    s.wait_ready(timeout=20)
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy", timeout=20,
                what="node 0 replaced after boot timeout")
    assert "no first report within timeouts.boot = 1s" in s.output()


def test_crash_loop_backs_off_then_exits_1(swarm):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:crash", env={"TESTAPP_ONLY_NODE": "1"},
                          restart={"delay": "100ms", "max_delay": "1s",
                                   "give_up_after": 4}))
    assert s.wait_exit(timeout=30) == 1
    out = s.output()
    delays = re.findall(r"node 1 restarts in (\S+) \(failure (\d) in a row\)", out)
    assert delays == [("0s", "1"), ("100ms", "2"), ("200ms", "3")], delays
    assert "node 1 failed 4 times in a row (restart.give_up_after)" in out
    assert "RuntimeError: boom in node 1" in out  # the traceback reached the output
    assert "node 1 about to crash" in out  # and so did its last words
    assert "node 0 exited with status 0 (stop)" in out  # the neighbour was stopped cleanly


def test_app_exiting_on_its_own_is_restarted_and_its_last_words_kept(swarm):
    s = swarm(base_config(nodes=1, app="swarmd_testapps:exit_code",
                          env={"TESTAPP_ONLY_GEN": "0", "TESTAPP_EXIT": "3"}))
    s.wait_node(0, lambda n: n["generation"] == 1 and n["health"] == "healthy",
                what="node 0 restarted after exit 3")
    out = s.output()
    # the replacement is forked first; what is written about the exit follows, in order
    order = [out.find(text) for text in ("swarmd-node[0] last words",
                                         "node 0 exited with status 3",
                                         "node 0 restarts in",
                                         "generation 1)")]
    assert -1 not in order, out
    assert order == sorted(order), out


def test_garbage_on_health_pipe_is_a_protocol_error_and_nothing_else(swarm):
    s = swarm(base_config(nodes=2, app="swarmd_testapps:garbage",
                          env={"TESTAPP_ONLY_NODE": "0", "TESTAPP_GARBAGE": r"b'-1\n'"}))
    s.wait_ready()
    s.wait_output("node 0 broke the health protocol: expected a code from 0 to 255")
    s.wait_status("2/2 healthy")
    wait_for(lambda: s.nodes()[0]["generation"] == 0, 5, "node 0 untouched")
