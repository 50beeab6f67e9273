"""Event kinds, their MESSAGE_IDs, and the sinks that write them: the journal or stderr.

The supervisor describes what happened as an Event; a sink decides how it looks. The journal
sink writes one structured entry per event (fields an operator filters on); the stderr sink
writes one readable line, for a foreground run or a stderr that is not the journal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple, Protocol, TextIO

from swarmd.config.health import PRIORITIES
from swarmd.loop.outbox import StreamOutbox
from swarmd.loop.poller import Poller
from swarmd.systemd import journal
from swarmd.systemd.native import JournalSender, encode_entry

SUPERVISOR_IDENTIFIER = "swarmd"
# The fleet's name under a template unit (swarmd@NAME sets SWARMD_FLEET=NAME): on every entry,
# so `journalctl -t swarmd SWARMD_FLEET=NAME` tells the fleets of one host apart.
FLEET = os.environ.get("SWARMD_FLEET") or None
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
        Kind("swarmd.resources", "460263cb28784cc495d9799be28fea06", 4),
        Kind("swarmd.scaled", "559c41eb8ebd4de7afe3bafcdfc7aa85", 5),
        Kind("swarmd.stacks", "73f9ce7cb8464a2b85e5322973ab3f42", 6),
        Kind("swarmd.metrics", "466cab6640a6442d904601b93d54c4d8", 4),
        Kind("swarmd.quiet", "759aca88ec2443669561a295005b83c4", 5),
        Kind("swarmd.stopping", "8035ac3fee164f5380548df2eace908a", 5),
        Kind("swarmd.stopped", "684d14d136654ab4b7d4408c19ee34d5", 5),
        Kind("node.started", "8d4b61ecd8484385830cbf3d9be70bf8", 6),
        Kind("node.health", "ab9052418f1d466cb4e20cb524ccb752", 6),
        Kind("node.hung", "f1913a2ab70649f8a4bee1064e7ca554", 3),
        Kind("node.exited", "281716404f2e4fa7b16eaa8654099a73", 6),
        Kind("node.killed", "c85dc999da1b419e9e35bd0abe207801", 4),
        Kind("node.restarting", "3172c153f3174e318d3d90b0e9e69670", 5),
        Kind("node.recycled", "20048c98c2614635a052c66cde610461", 5),
        Kind("node.crash_loop", "5f9eb7a51fee46d7a71e8ea060fb4986", 2),
        Kind("node.protocol_error", "eb4ddf49a2a84784b71a672634b86317", 4),
        Kind("node.output_dropped", "57a9d4932c1f475d987f6fb28be130b3", 4),
        Kind("node.metrics_refused", "c3f7074c7b3446a0a304792de2e8459e", 4),
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


class LoopSink(Sink, Protocol):
    """A sink that writes without waiting: the loop attaches it to its poller (write-readiness
    of its fd), lists its fds among those a node closes, and closes it at the end."""

    def attach(self, poller: Poller) -> None: ...

    def fds(self) -> list[int]: ...

    def close(self, drain: float = 1.0) -> None: ...


def journal_fields(event: Event) -> dict[str, str | int]:
    """The journal entry of an event, MESSAGE aside."""
    fields: dict[str, str | int] = {
        "PRIORITY": event.level,
        "SYSLOG_IDENTIFIER": SUPERVISOR_IDENTIFIER,
        "MESSAGE_ID": KINDS[event.kind].message_id,
        "SWARMD_EVENT": event.kind,
    }
    if FLEET is not None:
        fields["SWARMD_FLEET"] = FLEET
    if event.node is not None:
        fields["SWARMD_NODE_ID"] = event.node.id
        fields["SWARMD_NODE_PID"] = event.node.pid
        fields["SWARMD_NODE_GENERATION"] = event.node.generation
    fields.update(event.fields)
    return fields


def node_output_fields(node: NodeRef, priority: int) -> dict[str, str | int]:
    """A line a node printed: journald stamps the supervisor's _PID (it sent it), SYSLOG_PID
    names the node, which `journalctl` shows as swarmd-node[PID] (as syslog lines do)."""
    fields: dict[str, str | int] = {
        "PRIORITY": priority,
        "SYSLOG_IDENTIFIER": NODE_IDENTIFIER,
        "SYSLOG_PID": node.pid,
        "SWARMD_NODE_ID": node.id,
        "SWARMD_NODE_PID": node.pid,
        "SWARMD_NODE_GENERATION": node.generation,
    }
    if FLEET is not None:
        fields["SWARMD_FLEET"] = FLEET
    return fields


class JournalSink:
    """One structured entry per event, sent to journald without ever waiting for it
    (swarmd/systemd/native.py); the supervisor's own entries may use the queue's reserve that
    node output may not."""

    def __init__(self, sender: JournalSender | None = None) -> None:
        self.sender = sender if sender is not None else JournalSender(note=_journal_drop_note)

    def emit(self, event: Event) -> None:
        self.sender.put(encode_entry([("MESSAGE", event.message),
                                      *journal_fields(event).items()]), important=True)

    def node_output(self, node: NodeRef, line: str, priority: int) -> None:
        self.sender.put(encode_entry([("MESSAGE", line),
                                      *node_output_fields(node, priority).items()]))

    def attach(self, poller: Poller) -> None:
        """Entries journald could not take yet go out when the poller finds its socket
        writable (the loop calls this once; without it, each entry retries the queue)."""
        self.sender.attach(poller)

    def fds(self) -> list[int]:
        """The sink's own fds, for a node to close after its fork."""
        fd = self.sender.sock.fileno()
        return [fd] if fd >= 0 else []

    def close(self, drain: float = 1.0) -> None:
        """At exit: what journald has not taken yet gets up to `drain` seconds, then the
        socket is closed."""
        self.sender.drain(drain)
        self.sender.close()


def _journal_drop_note(count: int) -> bytes:
    return encode_entry([("MESSAGE", f"{count} journal entries dropped: journald did not take "
                                     f"them fast enough"),
                         ("PRIORITY", 4), ("SYSLOG_IDENTIFIER", SUPERVISOR_IDENTIFIER),
                         ("SWARMD_DROPPED", count)])


STDERR_LIMIT = 256 * 1024  # bytes of lines waiting for a slow stderr reader


class StderrSink:
    """Readable lines: `04:10:02.113 swarmd notice: node 3 exited with status 1 (pid 812)`.

    Written through a bounded Outbox that never waits for the reader (a terminal scrolled
    back, a pager, a slow pipe): what does not fit is dropped, and a line says how many once
    the stream drains. A closed or failing stderr only means nothing can be written."""

    def __init__(self, stream: TextIO | None = None, limit: int = STDERR_LIMIT) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.outbox: StreamOutbox | None = None
        if self.stream is None:  # started with fd 2 closed: nothing to write to
            return
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.StringIO and the like: written as is
            return
        try:
            self.stream.flush()  # what Python buffered goes first
            self.outbox = StreamOutbox.for_fd(fd, limit, _stderr_drop_note)
        except (OSError, ValueError):  # fd 2 closed under us
            self.stream = None

    def _write(self, text: str, important: bool = False) -> None:
        if self.outbox is not None:
            self.outbox.put(text.encode("utf-8", "backslashreplace"), important)
            return
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not stop the supervisor
            pass

    def emit(self, event: Event) -> None:
        self._write(f"{_stamp()} {SUPERVISOR_IDENTIFIER} {PRIORITIES[event.level]}: "
                    f"{event.message}\n", important=True)

    def node_output(self, node: NodeRef, line: str, priority: int) -> None:
        self._write(f"{NODE_IDENTIFIER}[{node.id}] {line}\n")

    def attach(self, poller: Poller) -> None:
        """Lines stderr could not take yet go out when the poller finds it writable."""
        if self.outbox is not None:
            self.outbox.attach(poller)

    def fds(self) -> list[int]:
        """The sink's own fds (a private reopen of stderr), for a node to close."""
        if self.outbox is None or self.outbox.fd <= 2:
            return []
        return [self.outbox.fd]

    def close(self, drain: float = 1.0) -> None:
        """At exit: what stderr has not taken yet gets up to `drain` seconds."""
        if self.outbox is not None:
            self.outbox.drain(drain)
            self.outbox.close()
            self.outbox = None


def _stamp() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


def _stderr_drop_note(count: int) -> bytes:
    return (f"{_stamp()} {SUPERVISOR_IDENTIFIER} warning: {count} line(s) dropped: stderr did "
            f"not take them fast enough\n").encode()


def default_sink() -> Sink:
    """The journal when our stderr is the journal stream, readable stderr lines otherwise."""
    return JournalSink() if journal.stderr_is_journal() else StderrSink()
