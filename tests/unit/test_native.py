"""The journal's native protocol against a fake journald (a datagram socket the test binds):
the encoding, a receiver that stops reading (the sender never waits), entries over the
datagram limit (a sealed memfd), and a journald that is not there or comes back."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmd.loop.poller import Poller
from swarmd.systemd import native
from swarmd.systemd.events import Event, JournalSink, NodeRef
from swarmd.systemd.native import JournalSender, encode_entry
from tests.fuzz import FUZZ

NODE = NodeRef(id=3, pid=812, generation=2)


def decode_entry(data: bytes) -> list[tuple[str, bytes]]:
    """The journal's own reading of the native format (journald-native.c), as a reference."""
    fields = []
    while data:
        end = data.index(b"\n")
        head = data[:end]
        if b"=" in head:
            name, value = head.split(b"=", 1)
            data = data[end + 1:]
        else:
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            name, value = head, data[end + 9:end + 9 + size]
            assert data[end + 9 + size:end + 10 + size] == b"\n"
            data = data[end + 10 + size:]
        fields.append((name.decode(), value))
    return fields


class FakeJournald:
    """A bound datagram socket; reads only when the test says."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def receive(self) -> list[list[tuple[str, bytes]]]:
        entries = []
        while True:
            fds = array.array("i")
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return entries
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:4])
            if fds:  # an entry in a memfd: read it as journald does
                fd = fds[0]
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
                assert data == b""
                data = os.pread(fd, os.fstat(fd).st_size, 0)
                os.close(fd)
            entries.append(decode_entry(data))

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    made = FakeJournald(tmp_path / "socket")
    yield made
    made.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def message(entry: list[tuple[str, bytes]]) -> bytes:
    return dict(entry)["MESSAGE"]


def test_simple_values_are_name_equals_value_lines() -> None:
    assert encode_entry([("MESSAGE", "hello"), ("PRIORITY", 6), ("X", None)]) == (
        b"MESSAGE=hello\nPRIORITY=6\n")


def test_a_value_with_a_newline_is_length_prefixed() -> None:
    assert encode_entry([("MESSAGE", "two\nlines")]) == (
        b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n")


@FUZZ
@given(st.lists(st.tuples(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
                          st.text() | st.integers()), max_size=8))
def test_any_text_round_trips_through_the_encoding(fields: list[tuple[str, object]]) -> None:
    decoded = decode_entry(encode_entry(fields))
    assert decoded == [(name, str(value).encode("utf-8", "backslashreplace"))
                       for name, value in fields]


def test_entries_arrive_as_datagrams(journald: FakeJournald) -> None:
    sink = JournalSink(JournalSender(journald.path))
    sink.emit(Event("node.exited", "node 3 exited\nwith status 1", node=NODE,
                    fields={"SWARMD_EXIT_STATUS": 1}))
    sink.node_output(NODE, "hello from the node", 4)
    exited, output = journald.receive()
    assert dict(exited)["MESSAGE"] == b"node 3 exited\nwith status 1"
    assert dict(exited)["SWARMD_EVENT"] == b"node.exited"
    assert dict(exited)["SWARMD_NODE_ID"] == b"3"
    assert dict(output) == {"MESSAGE": b"hello from the node", "PRIORITY": b"4",
                            "SYSLOG_IDENTIFIER": b"swarmd-node", "SYSLOG_PID": b"812",
                            "SWARMD_NODE_ID": b"3",
                            "SWARMD_NODE_PID": b"812", "SWARMD_NODE_GENERATION": b"2"}
    sink.close()


def test_a_journald_that_stops_reading_never_blocks_the_sender(journald: FakeJournald) -> None:
    poller = Poller()
    sender = JournalSender(journald.path, limit=256 * 1024, note=lambda n: encode_entry(
        [("MESSAGE", f"{n} dropped")]))
    sender.attach(poller)
    entries = [encode_entry([("MESSAGE", f"entry {i}"), ("PAD", "x" * 200)])
               for i in range(5000)]
    accepted = [i for i, entry in enumerate(entries) if sender.put(entry)]
    assert sender.dropped > 0 and sender.pending() <= 256 * 1024
    assert sender.fileno() in poller  # waiting for journald's queue to have room
    got: list[list[tuple[str, bytes]]] = []
    while not got or not message(got[-1]).endswith(b"dropped"):
        got += journald.receive()  # journald catches up; the loop finds the socket writable
        poller.poll(0)
    assert [message(e) for e in got[:-1]] == [f"entry {i}".encode() for i in accepted]
    assert message(got[-1]) == f"{5000 - len(accepted)} dropped".encode()
    assert sender.fileno() not in poller
    sender.close()
    poller.close()


def test_an_entry_over_the_datagram_limit_goes_in_a_sealed_memfd(journald: FakeJournald) -> None:
    sender = JournalSender(journald.path, limit=4 << 20)
    sender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    big = "y" * (1 << 20) + "\nend"
    sender.put(encode_entry([("MESSAGE", big), ("PRIORITY", 6)]))
    sender.put(encode_entry([("MESSAGE", "small")]))
    first, second = journald.receive()
    assert message(first) == big.encode() and dict(first)["PRIORITY"] == b"6"
    assert message(second) == b"small"
    sender.close()


def test_no_journald_means_dropped_entries_then_it_is_reached_when_it_comes(
        tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "later"
    sender = JournalSender(str(path), clock=clock)
    assert sender.fileno() is None
    sender.put(encode_entry([("MESSAGE", "lost")]))
    assert sender.dropped == 1 and sender.pending() == 0
    late = FakeJournald(path)
    try:
        sender.put(encode_entry([("MESSAGE", "too soon to try again")]))
        assert sender.dropped == 2
        clock.now += native.RECONNECT_EVERY
        sender.put(encode_entry([("MESSAGE", "reached")]))
        assert [message(e) for e in late.receive()] == [b"reached"]
    finally:
        late.close()
        sender.close()


def test_a_journald_that_restarts_is_reconnected(tmp_path: Path) -> None:
    clock = Clock()
    first = FakeJournald(tmp_path / "socket")
    sender = JournalSender(first.path, clock=clock,
                           note=lambda n: encode_entry([("MESSAGE", f"{n} dropped")]))
    sender.put(encode_entry([("MESSAGE", "one")]))
    assert [message(e) for e in first.receive()] == [b"one"]
    first.close()  # gone: ECONNREFUSED for the connected socket
    sender.put(encode_entry([("MESSAGE", "while away")]))
    assert sender.dropped == 1
    second = FakeJournald(tmp_path / "socket")
    try:
        clock.now += native.RECONNECT_EVERY
        sender.put(encode_entry([("MESSAGE", "two")]))
        assert [message(e) for e in second.receive()] == [b"two", b"1 dropped"]
    finally:
        second.close()
        sender.close()
