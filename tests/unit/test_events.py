"""swarmd.systemd.events: event kinds, their journal fields, and the readable stderr sink."""

from __future__ import annotations

import io
import re

import pytest

from swarmd.systemd.events import (
    KINDS,
    NODE_IDENTIFIER,
    SUPERVISOR_IDENTIFIER,
    Event,
    NodeRef,
    StderrSink,
    journal_fields,
    node_output_fields,
)

NODE = NodeRef(id=3, pid=812, generation=2)


def test_journal_fields_of_a_supervisor_event() -> None:
    fields = journal_fields(Event("swarmd.ready", "4/4 nodes reported"))
    assert fields == {
        "PRIORITY": KINDS["swarmd.ready"].priority,
        "SYSLOG_IDENTIFIER": "swarmd",
        "MESSAGE_ID": KINDS["swarmd.ready"].message_id,
        "SWARMD_EVENT": "swarmd.ready",
    }
    assert not any(key.startswith("SWARMD_NODE_") for key in fields)


def test_journal_fields_of_a_node_event() -> None:
    fields = journal_fields(Event("node.exited", "node 3 exited with status 1", node=NODE,
                                  fields={"SWARMD_EXIT_STATUS": 1}))
    assert fields == {
        "PRIORITY": KINDS["node.exited"].priority,
        "SYSLOG_IDENTIFIER": "swarmd",
        "MESSAGE_ID": "281716404f2e4fa7b16eaa8654099a73",
        "SWARMD_EVENT": "node.exited",
        "SWARMD_NODE_ID": 3,
        "SWARMD_NODE_PID": 812,
        "SWARMD_NODE_GENERATION": 2,
        "SWARMD_EXIT_STATUS": 1,
    }


def test_a_health_event_carries_its_code_and_the_priority_of_the_table() -> None:
    event = Event("node.health", "node 3 is memory_limit", node=NODE, priority=3,
                  fields={"SWARMD_HEALTH_CODE": 3, "SWARMD_HEALTH": "memory_limit"})
    fields = journal_fields(event)
    assert fields["PRIORITY"] == 3 != KINDS["node.health"].priority
    assert fields["SWARMD_HEALTH_CODE"] == 3
    assert fields["SWARMD_HEALTH"] == "memory_limit"


@pytest.mark.parametrize("priority", range(8))
def test_the_priority_override_wins_even_when_it_is_0(priority: int) -> None:
    event = Event("node.health", "x", node=NODE, priority=priority)
    assert event.level == priority
    assert journal_fields(event)["PRIORITY"] == priority


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_a_32_hex_message_id_and_a_syslog_priority(kind: str) -> None:
    assert KINDS[kind].name == kind
    assert re.fullmatch(r"[0-9a-f]{32}", KINDS[kind].message_id)
    assert 0 <= KINDS[kind].priority <= 7
    assert journal_fields(Event(kind, "x"))["MESSAGE_ID"] == KINDS[kind].message_id


def test_message_ids_are_unique() -> None:
    ids = [kind.message_id for kind in KINDS.values()]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("kind", ["node.started", "node.health", "node.hung", "node.exited",
                                  "node.restarting", "node.crash_loop", "swarmd.ready",
                                  "swarmd.reloading", "swarmd.stopping"])
def test_the_kinds_named_by_the_design_exist(kind: str) -> None:
    assert kind in KINDS


def test_node_output_is_tagged_with_the_node() -> None:
    assert node_output_fields(NODE, 6) == {
        "PRIORITY": 6,
        "SYSLOG_IDENTIFIER": "swarmd-node",
        "SYSLOG_PID": NODE.pid,
        "SWARMD_NODE_ID": 3,
        "SWARMD_NODE_PID": 812,
        "SWARMD_NODE_GENERATION": 2,
    }
    assert (SUPERVISOR_IDENTIFIER, NODE_IDENTIFIER) == ("swarmd", "swarmd-node")


@pytest.mark.parametrize("kind, priority, name", [("node.exited", None, "info"),
                                                  ("node.hung", None, "err"),
                                                  ("node.health", 5, "notice"),
                                                  ("node.crash_loop", None, "crit")])
def test_stderr_sink_writes_a_readable_line(kind: str, priority: int | None, name: str) -> None:
    stream = io.StringIO()
    StderrSink(stream).emit(Event(kind, "node 3 exited with status 1 (pid 812)", node=NODE,
                                  priority=priority))
    assert re.fullmatch(rf"\d\d:\d\d:\d\d\.\d{{3}} swarmd {name}: "
                        rf"node 3 exited with status 1 \(pid 812\)\n", stream.getvalue())


def test_stderr_sink_writes_node_output_with_the_node_id() -> None:
    stream = io.StringIO()
    StderrSink(stream).node_output(NODE, "hello from the node", 6)
    assert stream.getvalue() == "swarmd-node[3] hello from the node\n"


def test_stderr_sink_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    sink = StderrSink(stream)
    sink.emit(Event("swarmd.started", "a"))
    sink.emit(Event("swarmd.ready", "b"))
    assert len(stream.getvalue().splitlines()) == 2


def test_a_closed_stream_does_not_stop_the_sink() -> None:
    stream = io.StringIO()
    stream.close()
    sink = StderrSink(stream)
    sink.emit(Event("swarmd.ready", "still here"))
    sink.node_output(NODE, "still here", 6)
