"""Event kinds, their MESSAGE_IDs, and the sinks that write them: the journal or stderr.

The supervisor describes what happened as an Event; a sink decides how it looks. The journal
sink writes one structured entry per event (fields an operator filters on); the stderr sink
writes one readable line, for a foreground run or a stderr that is not the journal.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple, Protocol, TextIO

from swarmd.config.health import PRIORITIES
from swarmd.systemd import journal

SUPERVISOR_IDENTIFIER = "swarmd"
NODE_IDENTIFIER = "swarmd-node"


class Kind(NamedTuple):
    name: str
    message_id: str
    priority: int  # default syslog priority; health events take theirs from the code table


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("swarmd.started", "4faebabe4d164c4eb207be21f61d02de", 6),
        Kind("swarmd.ready", "29d712495f9842efa85c58a00f477f66", 5),
        Kind("swarmd.reloading", "f4a1b448f8454e61895714c9d560ca7e", 5),
        Kind("swarmd.reloaded", "b0ca2de0cdfb4d42ba684f57078fac66", 5),
        Kind("swarmd.reload_failed", "5b5aab10a9174747a5cd5f2a15f10697", 3),
        Kind("swarmd.deploy_failed", "422bfeb5992340388824a6965c5a8dfd", 3),
        Kind("swarmd.quiet", "759aca88ec2443669561a295005b83c4", 5),
        Kind("swarmd.stopping", "8035ac3fee164f5380548df2eace908a", 5),
        Kind("swarmd.stopped", "684d14d136654ab4b7d4408c19ee34d5", 5),
        Kind("node.started", "8d4b61ecd8484385830cbf3d9be70bf8", 6),
        Kind("node.health", "ab9052418f1d466cb4e20cb524ccb752", 6),
        Kind("node.hung", "f1913a2ab70649f8a4bee1064e7ca554", 3),
        Kind("node.exited", "281716404f2e4fa7b16eaa8654099a73", 6),
        Kind("node.killed", "c85dc999da1b419e9e35bd0abe207801", 4),
        Kind("node.restarting", "3172c153f3174e318d3d90b0e9e69670", 5),
        Kind("node.crash_loop", "5f9eb7a51fee46d7a71e8ea060fb4986", 2),
        Kind("node.protocol_error", "eb4ddf49a2a84784b71a672634b86317", 4),
    )
}


class NodeRef(NamedTuple):
    """Which node an entry is about: its slot id, its process, its generation."""

    id: int
    pid: int
    generation: int


class Event:
    """What happened, for a sink to write. (A plain class, like every value type of swarmd:
    dataclasses would import inspect and build each class at start, ~10 ms of every start.)"""

    __slots__ = ("kind", "message", "node", "priority", "fields")

    def __init__(self, kind: str, message: str, node: NodeRef | None = None,
                 priority: int | None = None,  # overrides the kind's default
                 fields: dict[str, str | int] | None = None) -> None:
        self.kind = kind
        self.message = message
        self.node = node
        self.priority = priority
        self.fields: dict[str, str | int] = {} if fields is None else fields

    def __repr__(self) -> str:
        return (f"Event({self.kind!r}, {self.message!r}, node={self.node!r}, "
                f"priority={self.priority!r}, fields={self.fields!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable fields

    @property
    def level(self) -> int:
        return KINDS[self.kind].priority if self.priority is None else self.priority


class Sink(Protocol):
    def emit(self, event: Event) -> None: ...

    def node_output(self, node: NodeRef, line: str, priority: int) -> None: ...


def journal_fields(event: Event) -> dict[str, str | int]:
    """The journal entry of an event, MESSAGE aside."""
    fields: dict[str, str | int] = {
        "PRIORITY": event.level,
        "SYSLOG_IDENTIFIER": SUPERVISOR_IDENTIFIER,
        "MESSAGE_ID": KINDS[event.kind].message_id,
        "SWARMD_EVENT": event.kind,
    }
    if event.node is not None:
        fields["SWARMD_NODE_ID"] = event.node.id
        fields["SWARMD_NODE_PID"] = event.node.pid
        fields["SWARMD_NODE_GENERATION"] = event.node.generation
    fields.update(event.fields)
    return fields


def node_output_fields(node: NodeRef, priority: int) -> dict[str, str | int]:
    return {
        "PRIORITY": priority,
        "SYSLOG_IDENTIFIER": NODE_IDENTIFIER,
        "SWARMD_NODE_ID": node.id,
        "SWARMD_NODE_PID": node.pid,
        "SWARMD_NODE_GENERATION": node.generation,
    }


class JournalSink:
    """One structured entry per event (stderr is the journal, or systemd-python is asked)."""

    def emit(self, event: Event) -> None:
        journal.journal_send(event.message, **journal_fields(event))

    def node_output(self, node: NodeRef, line: str, priority: int) -> None:
        journal.journal_send(line, **node_output_fields(node, priority))


class StderrSink:
    """Readable lines: `04:10:02.113 swarmd notice: node 3 exited with status 1 (pid 812)`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not stop the supervisor
            pass

    def emit(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        self._write(f"{stamp} {SUPERVISOR_IDENTIFIER} {PRIORITIES[event.level]}: "
                    f"{event.message}\n")

    def node_output(self, node: NodeRef, line: str, priority: int) -> None:
        self._write(f"{NODE_IDENTIFIER}[{node.id}] {line}\n")


def default_sink() -> Sink:
    """The journal when our stderr is the journal stream, readable stderr lines otherwise."""
    return JournalSink() if journal.stderr_is_journal() else StderrSink()
