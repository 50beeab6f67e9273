"""Log writes that never wait: the bounded Outbox over a pipe nobody reads, the stderr sink,
and what a closed or failing stderr does (nothing: it just cannot write)."""

from __future__ import annotations

import io
import os
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

from swarmd.loop.outbox import Outbox, StreamOutbox
from swarmd.loop.poller import Poller
from swarmd.systemd.events import Event, NodeRef, StderrSink

NODE = NodeRef(id=3, pid=812, generation=2)


@pytest.fixture
def poller() -> Iterator[Poller]:
    made = Poller()
    yield made
    made.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = bytearray()
    try:
        while chunk := os.read(fd, 1 << 20):
            out += chunk
    except BlockingIOError:
        pass
    return bytes(out)


def note(count: int) -> bytes:
    return f"[{count} dropped]\n".encode()


def line(i: int) -> bytes:
    return f"line {i:06d} {'x' * 90}\n".encode()  # 109 bytes


def test_a_reader_that_stops_never_blocks_the_writer_and_the_queue_is_bounded(
        poller: Poller, pipe: tuple[int, int]) -> None:
    r, w = pipe
    out = StreamOutbox.for_fd(w, 64 * 1024, note)
    out.attach(poller)
    accepted = [i for i in range(20_000) if out.put(line(i))]  # ~2 MB for a 64 KiB pipe
    assert out.pending() <= 48 * 1024  # ordinary lines fill the limit less its reserve
    assert out.dropped == 20_000 - len(accepted) > 0
    assert out.fileno() in poller  # waiting for write-readiness
    got = bytearray()
    while out.pending() or b"dropped" not in got:  # the reader catches up, the loop turns
        got += drain(r)
        poller.poll(0)
    got += drain(r)
    lines = bytes(got).splitlines(keepends=True)
    assert lines[:-1] == [line(i) for i in accepted]  # in order, nothing lost but the drops
    assert lines[-1] == note(20_000 - len(accepted))  # then how many were dropped, once
    assert out.fileno() not in poller  # drained: the loop is not woken for it any more
    out.close()


def test_important_items_use_the_reserve_ordinary_ones_may_not(pipe: tuple[int, int]) -> None:
    _, w = pipe
    out = StreamOutbox.for_fd(w, 64 * 1024, note)
    while out.put(line(0)):
        pass
    assert out.put(b"the supervisor's own entry\n", important=True)
    assert not out.put(line(1))
    out.close()


def test_without_a_poller_each_put_writes_what_the_reader_took_meanwhile(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    out = StreamOutbox.for_fd(w, 1 << 20, note)
    while out.pending() == 0:
        out.put(line(0))
    drain(r)
    out.put(b"next\n")
    assert out.pending() == 0
    out.close()


def test_a_reader_that_went_away_is_a_broken_outbox_not_an_exception(
        poller: Poller, pipe: tuple[int, int]) -> None:
    r, w = pipe
    out = StreamOutbox.for_fd(w, 1 << 20, note)
    out.attach(poller)
    os.close(r)
    out.put(b"to nobody\n")  # EPIPE (SIGPIPE is ignored by Python)
    assert out.broken is not None and out.dropped == 1
    assert not out.put(b"again\n") and out.dropped == 2
    assert len(poller) == 0
    out.close()


def test_a_pipe_is_reopened_privately_so_the_shared_fd_stays_blocking(
        pipe: tuple[int, int]) -> None:
    _, w = pipe
    out = StreamOutbox.for_fd(w, 1024)
    assert out.fd != w
    assert not os.get_blocking(out.fd)
    assert os.get_blocking(w)  # the shell's terminal or the parent's pipe: untouched
    out.close()


def test_a_regular_file_is_written_as_it_is() -> None:
    with tempfile.TemporaryFile() as handle:
        out = StreamOutbox.for_fd(handle.fileno(), 1024)
        assert out.fd == handle.fileno()
        assert out.put(b"hello\n") and out.pending() == 0
        handle.seek(0)
        assert handle.read() == b"hello\n"
        out.close()
        os.fstat(handle.fileno())  # not ours: still open


def test_a_socket_is_sent_to_without_waiting(poller: Poller) -> None:
    a, b = socket.socketpair()
    try:
        out = StreamOutbox.for_fd(a.fileno(), 1 << 20, note)
        out.attach(poller)
        for i in range(50_000):  # far more than the socket buffers hold
            out.put(line(i))
        assert out.dropped > 0
        out.close()
        a.getsockname()  # the sink's dup is closed, not the caller's socket
    finally:
        a.close()
        b.close()


# --- the stderr sink --------------------------------------------------------------------------


def test_the_stderr_sink_writes_lines_through_its_outbox(pipe: tuple[int, int]) -> None:
    r, w = pipe
    with os.fdopen(os.dup(w), "w") as stream:
        sink = StderrSink(stream)
        sink.emit(Event("node.exited", "node 3 exited with status 1 (pid 812)", node=NODE))
        sink.node_output(NODE, "hello from the node", 6)
        text = drain(r).decode()
        sink.close()
    first, second = text.splitlines()
    assert first.endswith(" swarmd info: node 3 exited with status 1 (pid 812)")
    assert second == "swarmd-node[3] hello from the node"


def test_a_slow_stderr_drops_node_lines_before_the_supervisors_and_says_how_many(
        poller: Poller, pipe: tuple[int, int]) -> None:
    r, w = pipe
    with os.fdopen(os.dup(w), "w") as stream:
        sink = StderrSink(stream, limit=128 * 1024)
        sink.attach(poller)
        for i in range(20_000):
            sink.node_output(NODE, f"flood {i}", 6)
        sink.emit(Event("node.exited", "node 3 exited with status 1 (pid 812)", node=NODE))
        got = bytearray()
        while b"dropped" not in got:
            got += drain(r)
            poller.poll(0)
        sink.close()
    lines = bytes(got).decode().splitlines()
    assert lines[-2].endswith("swarmd info: node 3 exited with status 1 (pid 812)")
    assert "swarmd warning: " in lines[-1]
    dropped = int(lines[-1].split("warning: ")[1].split()[0])
    assert dropped == 20_000 - (len(lines) - 2)
    assert lines[-1].endswith("line(s) dropped: stderr did not take them fast enough")


def test_a_closed_stderr_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", None)  # what Python sets when fd 2 was closed at start
    sink = StderrSink()
    sink.emit(Event("swarmd.ready", "ready"))
    sink.node_output(NODE, "hello", 6)
    assert sink.fds() == []


def test_a_stream_closed_under_the_sink_is_no_error() -> None:
    stream = io.StringIO()
    sink = StderrSink(stream)
    stream.close()
    sink.emit(Event("swarmd.ready", "ready"))  # ValueError of the closed stream: swallowed


def test_stderr_on_a_full_disk_is_no_error() -> None:
    with open("/dev/full", "w") as full:
        sink = StderrSink(full)
        sink.emit(Event("swarmd.ready", "ready"))  # ENOSPC: the outbox is broken, not raised
        assert sink.outbox is not None and sink.outbox.broken is not None
        sink.close()


class Flaky(Outbox):
    """Each write fails (and the item is dropped) while `failing` is set."""

    def __init__(self) -> None:
        super().__init__(1 << 20, note)
        self.failing = True
        self.written: list[bytes] = []

    def fileno(self) -> int | None:
        return None

    def _write(self, data: bytes) -> int:
        if self.failing:
            raise ConnectionRefusedError(111, "not there")
        self.written.append(data)
        return len(data)

    def _failed(self, exc: OSError) -> bool:
        return True


def test_items_that_cannot_go_are_counted_and_told_once_writes_work_again() -> None:
    out = Flaky()
    for i in range(3):
        out.put(line(i))  # each dropped as it fails; no note while failing (it would fail too)
    assert out.dropped == 3 and out.written == []
    out.failing = False
    out.put(b"back\n")
    assert out.written == [b"back\n", note(3)]
    assert out.dropped == 0 and out.dropped_total == 3


def test_an_item_larger_than_the_limit_still_goes_when_nothing_waits(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    out = StreamOutbox.for_fd(w, 100, note)
    assert out.put(b"y" * 1000 + b"\n")
    assert drain(r) == b"y" * 1000 + b"\n"
    out.close()


def test_without_a_poller_a_full_queue_still_moves_as_the_reader_reads(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    out = StreamOutbox.for_fd(w, 64 * 1024, note)
    while out.put(line(0)):
        pass
    got = drain(r)  # the reader takes what the pipe held; the queue still waits
    assert not out.put(line(1))  # no room in the queue, yet this put writes what it can
    got += drain(r)
    assert len(got) > 64 * 1024  # more than one pipe's worth came out
    out.close()


def test_at_exit_the_queue_gets_a_bounded_wait_to_go_out(pipe: tuple[int, int]) -> None:
    r, w = pipe
    out = StreamOutbox.for_fd(w, 1 << 20, note)
    while out.pending() == 0:
        out.put(line(0))
    out.put(b"last words\n", important=True)
    reader = threading.Thread(target=lambda: got.extend(read_until(r, b"last words\n")))
    got: list[bytes] = []
    reader.start()
    out.drain(30)  # returns as soon as the reader took it all
    reader.join(30)
    assert out.pending() == 0 and got[-1].endswith(b"last words\n")
    out.close()


def test_a_drain_nobody_reads_gives_up_at_its_timeout(pipe: tuple[int, int]) -> None:
    _, w = pipe
    out = StreamOutbox.for_fd(w, 1 << 20, note)
    while out.pending() == 0:
        out.put(line(0))
    out.drain(0.05)
    assert out.pending() > 0  # still queued: the drain did not wait for ever
    out.close()


def read_until(fd: int, end: bytes) -> list[bytes]:
    data = b""
    while not data.endswith(end):
        data += os.read(fd, 1 << 16)
    return [data]
