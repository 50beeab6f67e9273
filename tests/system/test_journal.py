"""What reaches the journal under the shipped unit: supervisor events with their fields and
MESSAGE_IDs, every node's output tagged with the node, health transitions, crash tracebacks,
and the catalog that explains the events."""

from __future__ import annotations

import re

import pytest

from swarmd.systemd.events import KINDS
from tests.system.container import JournalEntry, wait_for
from tests.system.swarmd_service import (
    PACKAGING,
    Swarmd,
    field,
    install_catalog,
)

pytestmark = pytest.mark.system

NODE_FIELDS = ("SWARMD_NODE_ID", "SWARMD_NODE_PID", "SWARMD_NODE_GENERATION")


def node_entries(swarmd: Swarmd, node_id: int) -> list[JournalEntry]:
    """``journalctl -u swarmd SWARMD_NODE_ID=N``: one node's whole story."""
    return swarmd.journal(f"SWARMD_NODE_ID={node_id}")


def assert_event_fields(entry: JournalEntry, kind: str) -> None:
    assert field(entry, "SYSLOG_IDENTIFIER") == "swarmd"
    assert field(entry, "SWARMD_EVENT") == kind
    assert field(entry, "MESSAGE_ID") == KINDS[kind].message_id
    assert field(entry, "PRIORITY") in "01234567"


def test_every_line_of_a_node_reaches_the_journal_tagged_with_it(swarmd: Swarmd) -> None:
    swarmd.start(nodes=3, app="swarmd_systemapps:chatty")
    supervisor = swarmd.main_pid()
    nodes = swarmd.wait_healthy(3)
    one = nodes[1]

    started = swarmd.wait_event("node.started", "SWARMD_NODE_ID=1")[0]
    assert_event_fields(started, "node.started")
    assert (field(started, "SWARMD_NODE_PID"), field(started, "SWARMD_NODE_GENERATION")) == (
        str(one["pid"]), "0")
    assert field(started, "PRIORITY") == "6"
    first = swarmd.wait_event("node.health", "SWARMD_NODE_ID=1")[0]
    assert_event_fields(first, "node.health")
    assert (field(first, "SWARMD_HEALTH_CODE"), field(first, "SWARMD_HEALTH")) == ("0", "healthy")

    # print() and stderr travel through pipes and the supervisor forwards them (its _PID);
    # node.log records are sent by the node itself (its own _PID). All carry the node's fields.
    routes = {
        "node 1 gen 0 says hello on stdout": ("6", supervisor),
        "node 1 complains on stderr": ("4", supervisor),
        "node 1 sets its own priority": ("3", supervisor),
        "node 1 warns through node.log": ("4", one["pid"]),
    }
    for text, (priority, sender) in routes.items():
        entry = swarmd.wait_message(text, "SWARMD_NODE_ID=1")
        assert field(entry, "MESSAGE") == text  # "<3>" was taken as the priority
        assert field(entry, "SYSLOG_IDENTIFIER") == "swarmd-node"
        assert field(entry, "PRIORITY") == priority, text
        assert int(field(entry, "_PID")) == sender, text
        assert [field(entry, name) for name in NODE_FIELDS] == ["1", str(one["pid"]), "0"]
        assert int(field(entry, "SYSLOG_PID")) == one["pid"], text

    # One node's story: its supervisor events and its own lines, nothing of the others.
    story = node_entries(swarmd, 1)
    assert {field(e, "SWARMD_NODE_ID") for e in story} == {"1"}
    assert {field(e, "SYSLOG_IDENTIFIER") for e in story} == {"swarmd", "swarmd-node"}
    assert {e.get("SWARMD_EVENT") for e in story} >= {"node.started", "node.health"}
    assert not [e for e in story if re.search(r"node [02]\b", field(e, "MESSAGE"))]
    # -t separates the supervisor from the nodes.
    own = swarmd.journal("SYSLOG_IDENTIFIER=swarmd-node")
    assert own and not [e for e in own if "SWARMD_EVENT" in e]

    # A node killed by a signal: SWARMD_EXIT_SIGNAL, then a restart in the same slot.
    swarmd.c.run("kill", "-KILL", str(nodes[0]["pid"]))
    exited = swarmd.wait_event("node.exited", "SWARMD_NODE_ID=0")[0]
    assert_event_fields(exited, "node.exited")
    assert field(exited, "SWARMD_EXIT_SIGNAL") == "9"
    assert "SWARMD_EXIT_STATUS" not in exited
    assert field(exited, "SWARMD_HEALTH") == "exited"
    assert field(exited, "PRIORITY") == "3"
    assert field(exited, "SWARMD_NODE_PID") == str(nodes[0]["pid"])
    restarting = swarmd.wait_event("node.restarting", "SWARMD_NODE_ID=0")[0]
    assert_event_fields(restarting, "node.restarting")
    swarmd.wait_event("node.started", "SWARMD_NODE_ID=0", "SWARMD_NODE_GENERATION=1")

    # A requested exit: SWARMD_EXIT_STATUS.
    swarmd.stop()
    done = swarmd.wait_event("node.exited", f"SWARMD_NODE_PID={one['pid']}")[0]
    assert field(done, "SWARMD_EXIT_STATUS") == "0"
    assert "SWARMD_EXIT_SIGNAL" not in done
    assert field(done, "PRIORITY") == "6"

    events = [e for e in swarmd.journal() if "SWARMD_EVENT" in e]
    for entry in events:
        assert_event_fields(entry, field(entry, "SWARMD_EVENT"))
        if field(entry, "SWARMD_EVENT").startswith("node."):
            assert all(name in entry for name in NODE_FIELDS), entry
    kinds = {field(e, "SWARMD_EVENT") for e in events}
    assert kinds >= {"swarmd.started", "swarmd.ready", "node.started", "node.health",
                     "node.exited", "node.restarting", "swarmd.stopping", "swarmd.stopped"}


def test_a_command_nodes_stdout_and_stderr_are_tagged_with_it(swarmd: Swarmd) -> None:
    script = ('echo "cmd node $SWARMD_NODE_ID out"; echo "cmd node $SWARMD_NODE_ID err" >&2; '
              'while :; do echo 0 >&3; sleep 0.2; done')
    swarmd.start({"nodes": 2, "app": None, "command": ["/bin/sh", "-c", script]})
    nodes = swarmd.wait_healthy(2)
    for node_id, node in nodes.items():
        for stream, priority in (("out", "6"), ("err", "4")):
            entry = swarmd.wait_message(f"cmd node {node_id} {stream}",
                                        f"SWARMD_NODE_ID={node_id}")
            assert field(entry, "SYSLOG_IDENTIFIER") == "swarmd-node"
            assert field(entry, "PRIORITY") == priority
            assert field(entry, "SWARMD_NODE_PID") == str(node["pid"])


def test_a_reported_code_and_its_recovery_are_one_entry_each(swarmd: Swarmd) -> None:
    swarmd.start(nodes=3, app="swarmd_systemapps:code_burst",
                 env={"TESTAPP_PERIOD": "0.2", "TESTAPP_ONLY_NODE": "1", "TESTAPP_CODE": "3",
                      "TESTAPP_REPEAT": "5"},
                 health={"codes": {3: {"name": "memory_limit", "priority": "err",
                                       "action": "log"}}})
    swarmd.wait_message("node 1: healthy again", "SWARMD_NODE_ID=1")
    # The control socket answers from the same loop that reads the health pipes: once it
    # says healthy, the supervisor has read every report sent before the log line above.
    wait_for(lambda: swarmd.nodes()[1]["code"] == 0, 5, "node 1 to be healthy again")

    health = swarmd.events("node.health", "SWARMD_NODE_ID=1")
    summary = [(field(e, "SWARMD_HEALTH_CODE"), field(e, "SWARMD_HEALTH"), field(e, "PRIORITY"))
               for e in health]
    # Five reports of code 3 and a stream of healthy ones: three transitions, three entries.
    assert summary == [("0", "healthy", "6"), ("3", "memory_limit", "3"),
                       ("0", "healthy", "6")], [field(e, "MESSAGE") for e in health]
    assert field(health[1], "MESSAGE") == "node 1: healthy (0) -> memory_limit (3)"
    assert field(health[2], "MESSAGE") == "node 1: memory_limit (3) -> healthy (0)"
    for entry in health:
        assert_event_fields(entry, "node.health")
        assert field(entry, "SWARMD_NODE_GENERATION") == "0"
    for other in (0, 2):  # steady nodes: their first report only
        assert len(swarmd.events("node.health", f"SWARMD_NODE_ID={other}")) == 1
    assert not swarmd.events("node.exited")  # action: log


def test_a_restart_code_restarts_the_node_and_its_successor_reports_healthy(
        swarmd: Swarmd) -> None:
    swarmd.start(nodes=2, app="swarmd_testapps:code_once",
                 env={"TESTAPP_PERIOD": "0.2", "TESTAPP_ONLY_NODE": "0", "TESTAPP_ONLY_GEN": "0",
                      "TESTAPP_CODE": "3"},
                 health={"codes": {3: {"name": "memory_limit", "priority": "err",
                                       "action": "restart"}}})
    swarmd.wait_event("node.started", "SWARMD_NODE_ID=0", "SWARMD_NODE_GENERATION=1")
    health = swarmd.wait_event("node.health", "SWARMD_NODE_ID=0", count=3)
    summary = [(field(e, "SWARMD_NODE_GENERATION"), field(e, "SWARMD_HEALTH"),
                field(e, "PRIORITY")) for e in health]
    assert summary == [("0", "healthy", "6"), ("0", "memory_limit", "3"),
                       ("1", "healthy", "6")], [field(e, "MESSAGE") for e in health]
    assert field(health[1], "MESSAGE").endswith("memory_limit (3): restart")
    exited = swarmd.wait_event("node.exited", "SWARMD_NODE_ID=0")[0]
    assert field(exited, "MESSAGE").endswith("(reported memory_limit (3))")
    assert field(exited, "SWARMD_EXIT_STATUS") == "0"
    swarmd.wait_event("node.restarting", "SWARMD_NODE_ID=0")


def test_a_crash_traceback_is_one_entry_tagged_with_its_node(swarmd: Swarmd) -> None:
    swarmd.start(nodes=3, app="swarmd_testapps:crash",
                 env={"TESTAPP_PERIOD": "0.2", "TESTAPP_ONLY_NODE": "2", "TESTAPP_ONLY_GEN": "0"})
    swarmd.wait_healthy(3)
    crashed = swarmd.wait_event("node.exited", "SWARMD_NODE_ID=2")[0]
    pid = field(crashed, "SWARMD_NODE_PID")
    assert field(crashed, "SWARMD_EXIT_STATUS") == "1"
    assert field(crashed, "PRIORITY") == "3"

    # The node sent its traceback itself, a moment before it exited: journald may store
    # the supervisor's node.exited entry first.
    swarmd.wait_message("boom in node 2", "SWARMD_NODE_ID=2")
    story = node_entries(swarmd, 2)
    boom = [e for e in story if "boom in node 2" in field(e, "MESSAGE")]
    assert len(boom) == 1, [field(e, "MESSAGE") for e in boom]
    trace = field(boom[0], "MESSAGE")
    assert trace.startswith("Traceback (most recent call last):\n")
    assert "swarmd_testapps.py" in trace
    assert trace.endswith("RuntimeError: boom in node 2")
    assert field(boom[0], "SYSLOG_IDENTIFIER") == "swarmd-node"
    assert field(boom[0], "PRIORITY") == "3"
    assert field(boom[0], "_PID") == pid  # sent by the node itself
    assert [field(boom[0], name) for name in NODE_FIELDS] == ["2", pid, "0"]
    # Not a line of it became an entry of its own.
    assert not [e for e in swarmd.journal() if field(e, "MESSAGE").startswith("  File ")]
    # Its last words on stdout before the crash are there, tagged with the node.
    last = swarmd.wait_message("node 2 about to crash", f"SWARMD_NODE_PID={pid}")
    assert field(last, "SYSLOG_IDENTIFIER") == "swarmd-node"
    assert field(last, "SWARMD_NODE_ID") == "2"
    assert swarmd.events("node.restarting", "SWARMD_NODE_ID=2")


def test_ttin_makes_every_node_write_its_stacks_as_one_entry(swarmd: Swarmd) -> None:
    swarmd.start(nodes=2)
    nodes = swarmd.wait_healthy(2)

    swarmd.c.systemctl("kill", "--signal=TTIN", "--kill-whom=main", swarmd.unit)

    for node_id, node in nodes.items():
        entry = swarmd.wait_message("(SIGTTIN)", f"_PID={node['pid']}")
        assert field(entry, "SWARMD_NODE_ID") == str(node_id)
        assert 'Thread "MainThread"' in field(entry, "MESSAGE")
        assert "in steady" in field(entry, "MESSAGE")


def parse_catalog(text: str) -> dict[str, dict[str, str]]:
    """``-- ID`` entries: header lines until a blank line, then the text (systemd's format)."""
    entries: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    in_header = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        head = re.fullmatch(r"-- ([0-9a-f]{32})", line)
        if head:
            assert head.group(1) not in entries, f"line {number}: {head.group(1)} twice"
            current = entries.setdefault(head.group(1), {"TEXT": ""})
            in_header = True
            continue
        if current is None:
            assert not line.strip(), f"line {number}: text before the first entry"
            continue
        if in_header:
            if not line:
                in_header = False
                continue
            key, sep, value = line.partition(": ")
            assert sep and re.fullmatch(r"[A-Z][A-Za-z-]+", key), f"line {number}: {line!r}"
            current[key] = value
        else:
            current["TEXT"] += line + "\n"
    return entries


def test_catalog_file_explains_every_message_id() -> None:
    entries = parse_catalog((PACKAGING / "swarmd.catalog").read_text())

    assert set(entries) == {kind.message_id for kind in KINDS.values()}
    for name, kind in KINDS.items():
        entry = entries[kind.message_id]
        assert entry["Defined-By"] == "swarmd", name
        assert entry.get("Subject", "").startswith("swarmd "), name
        assert entry.get("Support"), name
        assert len(entry["TEXT"].split()) >= 30, f"{name}: say what happened and what to do"
        # @FIELD@ substitutions only of fields every entry of that kind carries.
        allowed = {"SWARMD_NODE_ID"} if name.startswith("node.") else set()
        if name == "node.health":
            allowed |= {"SWARMD_HEALTH", "SWARMD_HEALTH_CODE"}
        if name == "node.recycled":
            allowed |= {"SWARMD_RECYCLE_REASON"}
        used = set(re.findall(r"@([A-Z0-9_]+)@", entry["Subject"] + entry["TEXT"]))
        assert used <= allowed, f"{name}: {used - allowed}"


def test_catalog_installs_and_explains_the_events(swarmd: Swarmd) -> None:
    printed = install_catalog(swarmd.c)
    assert "swarmd" not in printed, printed  # no complaint about our file

    listed = swarmd.c.run("journalctl", "--list-catalog").stdout
    for name, kind in KINDS.items():
        assert kind.message_id in listed, name
    swarmd.start(nodes=2)
    swarmd.wait_healthy(2)
    swarmd.wait_event("node.started", "SWARMD_NODE_ID=1")

    explained = swarmd.c.run("journalctl", "--no-pager", "-x", "-u", swarmd.unit,
                             "SWARMD_EVENT=node.started", "SWARMD_NODE_ID=1").stdout
    assert "Subject: swarmd node 1 started" in explained
    assert "Defined-By: swarmd" in explained
    assert "journalctl -u swarmd SWARMD_NODE_ID=1" in explained


def test_a_node_printing_as_fast_as_it_can_never_drowns_the_supervisors_entries(
        swarmd: Swarmd) -> None:
    """journald limits each unit's messages; a node flooding its output would have made it
    drop the supervisor's own entries. swarmd limits the node first and counts what it
    dropped, and journald (its limit set higher in the unit) drops nothing."""
    swarmd.start(nodes=3, app="swarmd_testapps:print_flood",
                 env={"TESTAPP_PERIOD": "0.2", "TESTAPP_ONLY_NODE": "0",
                      "TESTAPP_FLOOD_SECONDS": "5"})
    nodes = swarmd.wait_healthy(3)
    swarmd.c.run("kill", "-9", str(nodes[1]["pid"]))  # while node 0 floods
    exited = swarmd.wait_event("node.exited", "SWARMD_NODE_ID=1")[0]
    assert field(exited, "SWARMD_EXIT_SIGNAL") == "9"
    swarmd.wait_event("node.restarting", "SWARMD_NODE_ID=1")
    swarmd.wait_event("node.started", "SWARMD_NODE_ID=1", "SWARMD_NODE_GENERATION=1")
    swarmd.wait_message("node 0 flood line", "SWARMD_NODE_ID=0")
    # the first drop is told at once, the rest of the flood ten seconds after it
    dropped = swarmd.wait_event("node.output_dropped", "SWARMD_NODE_ID=0", count=2,
                                timeout=30)
    assert sum(int(field(e, "SWARMD_DROPPED")) for e in dropped) > 10_000
    assert field(dropped[0], "PRIORITY") == "4"
    # Every entry the supervisor wrote about its nodes is there: 4 starts, 4 first reports.
    assert len(swarmd.events("node.started")) == 4
    firsts = [e for e in swarmd.events("node.health") if "first" in field(e, "MESSAGE")]
    assert len(firsts) == 4
    suppressed = [field(e, "MESSAGE") for e in swarmd.c.journal(
        "SYSLOG_IDENTIFIER=systemd-journald", since_cursor=swarmd.cursor)
        if "Suppressed" in field(e, "MESSAGE")]
    assert not suppressed, suppressed


def test_a_node_logging_as_fast_as_it_can_is_limited_by_the_node_itself(
        swarmd: Swarmd) -> None:
    """node.log records go to journald from the node, not through the supervisor: the node
    applies the same output limit and says what it dropped."""
    swarmd.start(nodes=2, app="swarmd_testapps:log_flood",
                 env={"TESTAPP_PERIOD": "0.2", "TESTAPP_ONLY_NODE": "0",
                      "TESTAPP_FLOOD_SECONDS": "3"})
    swarmd.wait_healthy(2)
    # the first drop is told at once, the rest of the flood ten seconds after it
    told = swarmd.wait_entries("the node telling what it dropped", lambda e: "log record(s) "
                               "of this node dropped" in field(e, "MESSAGE"), 2,
                               "SWARMD_NODE_ID=0", timeout=30)
    assert sum(int(field(e, "SWARMD_DROPPED")) for e in told) > 10_000
    assert field(told[0], "SYSLOG_IDENTIFIER") == "swarmd-node"
    kept = [e for e in swarmd.journal("SWARMD_NODE_ID=0")
            if "log flood record" in field(e, "MESSAGE")]
    assert 0 < len(kept) < 10_000, len(kept)  # burst 2000 + 200/s, not the whole flood
    suppressed = [field(e, "MESSAGE") for e in swarmd.c.journal(
        "SYSLOG_IDENTIFIER=systemd-journald", since_cursor=swarmd.cursor)
        if "Suppressed" in field(e, "MESSAGE")]
    assert not suppressed, suppressed
