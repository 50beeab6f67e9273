"""The parts of a deploy that need no process: the wire between supervisor and candidate, the
config as data, the hand-over state of a node, the way back into this program."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from swarmd.candidate.channel import Channel
from swarmd.candidate.load import describe_failure
from swarmd.candidate.wire import ChannelClosed, Kind, read_messages
from swarmd.config import from_data, parse, to_data
from swarmd.node.process import NodeProcess, State, StopReason
from swarmd.node.spawn import NodeLimits
from swarmd.supervisor import candidate, handover
from swarmd.supervisor.backoff import Backoff
from swarmd.supervisor.deploy import Outcome, Result
from swarmd.supervisor.slot import DownReason, Slot


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    supervisor, loader = Channel(a), Channel(b)
    yield supervisor, loader
    supervisor.close()
    loader.close()


def test_a_spawn_request_arrives_with_its_three_pipes(pair) -> None:
    supervisor, loader = pair
    pipes = [os.pipe() for _ in range(3)]
    supervisor.send(Kind.SPAWN, fds=tuple(w for _, w in pipes), slot=3, generation=7)
    supervisor.send(Kind.SPAWN, fds=tuple(r for r, _ in pipes), slot=4, generation=1)
    got = []
    while len(got) < 2:
        got += loader.receive()
    (first, first_fds), (second, second_fds) = got
    assert (first["slot"], first["generation"], second["slot"]) == (3, 7, 4)
    os.write(first_fds[1], b"through the passed fd")  # the write end of the second pipe
    assert os.read(pipes[1][0], 64) == b"through the passed fd"
    for fd in (*first_fds, *second_fds, *(fd for p in pipes for fd in p)):
        os.close(fd)


def test_messages_split_anywhere_are_put_back_together(pair) -> None:
    supervisor, loader = pair
    data = b'{"t": "loaded", "seconds": 1.5}\n{"t": "failed", "problems": ["x"]}\n'
    for i in range(len(data)):  # one byte at a time
        loader.sock.send(data[i:i + 1])
    supervisor.sock.setblocking(False)
    got = []
    for _ in range(len(data)):
        got += supervisor.receive()
    assert [m["t"] for m, _ in got] == ["loaded", "failed"]


@pytest.mark.parametrize("garbage", [b"not json\n", b'{"t": "nonsense"}\n', b"[1, 2]\n",
                                     b'{"t": "spawn", "slot": 1, "fds": 3}\n',
                                     b'{"t": "spawned", "fds": 99}\n'])
def test_garbage_or_a_spawn_without_pipes_closes_the_channel(pair, garbage: bytes) -> None:
    supervisor, loader = pair
    loader.sock.sendall(garbage)
    with pytest.raises(ChannelClosed):
        supervisor.receive()


def test_an_endless_line_closes_the_channel_instead_of_growing(pair) -> None:
    supervisor, loader = pair
    loader.sock.setblocking(False)
    supervisor.sock.setblocking(False)
    chunk = b"x" * 65536
    with pytest.raises(ChannelClosed, match="longer than"):
        for _ in range(200):
            try:
                loader.sock.send(chunk)
            except BlockingIOError:
                pass
            supervisor.receive()


def test_eof_is_channel_closed(pair) -> None:
    supervisor, loader = pair
    loader.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ChannelClosed, match="closed"):
        supervisor.receive()


def test_a_loaders_pipe_gives_whole_messages_and_eof() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    buffer = bytearray()
    os.write(w, b'{"t": "config", "config": {}}\n{"t": "loa')
    messages, eof = read_messages(r, buffer)
    assert [m["t"] for m in messages] == ["config"] and not eof
    os.write(w, b'ded"}\n')
    os.close(w)
    messages, eof = read_messages(r, buffer)
    assert [m["t"] for m in messages] == ["loaded"] and eof
    os.close(r)


def test_a_config_crosses_as_data_unchanged() -> None:
    config = parse("nodes: 3\napp: a.b:c\npreload: false\nenv: {A: '1', B: x}\n"
                   "timeouts: {boot: 2s, drain: 500ms}\nrestart: {delay: 0, max_delay: 3s}\n"
                   "reload: quiet\nhealth: {codes: {3: {name: big, priority: warning, "
                   "action: log}}}\n", "/etc/x.yaml")
    assert from_data(to_data(config)) == config
    command = parse(f"command: [{sys.executable}, -c, pass]\n")
    assert from_data(to_data(command)) == command


@pytest.mark.parametrize(("error", "text"), [
    (SystemExit(3), "app: importing 'a:b' called sys.exit(3) (argparse does that on bad "
                    "arguments): an app must not exit or parse the command line at import"),
    (ModuleNotFoundError("No module named 'a'"),
     "app: cannot load 'a:b': ModuleNotFoundError: No module named 'a'"),
    (KeyError(), "app: cannot load 'a:b': KeyError"),
])
def test_an_import_failure_says_what_to_do(error: BaseException, text: str) -> None:
    assert describe_failure("a:b", error) == text


def test_a_node_crosses_the_exec_with_what_the_supervisor_knew() -> None:
    proc = NodeProcess(2, 5, 4242, 11, 12, 13, 14, 100.5, is_command=False)
    proc.state = State.DRAINING
    proc.first_report_at, proc.last_report_at, proc.healthy_since = 101.0, 150.0, 101.0
    proc.code = 0
    proc.ask_to_go(StopReason.DEPLOY)
    proc.drain_started_at = 149.0
    proc._health.feed(b"0\n2")  # half a report pending
    proc._splitters[13].feed(b"half a line")
    proc.close_output = lambda fd: None  # type: ignore[method-assign]
    back = handover.proc_from_state(handover.proc_state(proc))
    assert (back.id, back.generation, back.pid, back.pidfd, back.health_fd) == (2, 5, 4242, 11,
                                                                                 12)
    assert back.output_fds == {13: 6, 14: 4}
    assert back.state is State.DRAINING and back.stop_reason is StopReason.DEPLOY
    assert (back.first_report_at, back.last_report_at, back.drain_started_at) == (101.0, 150.0,
                                                                                  149.0)
    assert back._health.feed(b"\n").worst == 2  # the pending half finished after the exec
    assert back._splitters[13].feed(b" and its end\n") == ["half a line and its end"]


def test_a_slot_crosses_the_exec_with_its_backoff_and_pending_restart() -> None:
    slot = Slot(4, Backoff(parse("").restart))
    slot.generation, slot.restarts = 9, 3
    slot.backoff.failures = 2
    slot.restart_at = 1234.5
    slot.down_reason = DownReason.RESTARTING
    data = handover.slot_state(slot)
    backoff = Backoff(parse("").restart)
    back = handover.slot_from_state(data, backoff)
    assert (back.id, back.generation, back.restarts, back.restart_at) == (4, 9, 3, 1234.5)
    assert back.down_reason is DownReason.RESTARTING and backoff.failures == 2
    assert data["proc"] is None


def test_the_fds_a_state_names_are_the_ones_that_cross() -> None:
    state = {"control": {"listen": 5, "clients": [{"fd": 9, "phase": "waiting"}]},
             "slots": [{"proc": {"pidfd": 20, "health_fd": 21, "output_fds": {"22": 6}}},
                       {"proc": None}]}
    assert sorted(handover.inherited_fds(state)) == [5, 9, 20, 21, 22]


def test_the_way_back_into_this_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "orig_argv", ["/v/bin/python", "-X", "dev", "-m", "swarmd", "run",
                                           "-c", "/etc/s.yaml"])
    monkeypatch.setattr(sys, "argv", ["/x/swarmd/__main__.py", "run", "-c", "/etc/s.yaml"])
    assert candidate.entry_argv() == ["/v/bin/python", "-X", "dev", "-m", "swarmd"]
    monkeypatch.setattr(sys, "orig_argv", ["/v/bin/python", "/v/bin/swarmd", "run"])
    monkeypatch.setattr(sys, "argv", ["/v/bin/swarmd", "run"])
    assert candidate.entry_argv() == ["/v/bin/python", "/v/bin/swarmd"]


@pytest.mark.parametrize("limits", [NodeLimits((1024, 524288), 300), NodeLimits(None, None),
                                    NodeLimits((0, 0), -1000)])
def test_node_limits_cross_a_command_line_and_the_exec(limits: NodeLimits) -> None:
    assert NodeLimits.from_arg(limits.to_arg()) == limits
    assert NodeLimits.from_data(limits.to_data()) == limits


def test_a_deploys_outcome_crosses_the_exec() -> None:
    outcome = Outcome(Result.ROLLED_BACK, "deploy rolled back: x", "slot 1: x", "0.2.0", 1.0,
                      2.0, 3)
    assert Outcome.from_dict(outcome.to_dict()) == outcome
