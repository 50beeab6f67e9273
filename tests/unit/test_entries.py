"""node.exited and node.restarting: priority, fields and text from the facts alone."""

from __future__ import annotations

import signal

import pytest

from swarmd.node.process import ExitStatus, NodeProcess, StopReason
from swarmd.supervisor.entries import node_exited, node_restarting


def proc(stop_reason: StopReason | None = None, killed: bool = False,
         detail: str | None = None) -> NodeProcess:
    p = NodeProcess(3, 7, 4242, -1, -1, -1, -2, 0.0, is_command=False)
    p.killed = killed
    if stop_reason is not None:
        p.ask_to_go(stop_reason, detail)
    return p


@pytest.mark.parametrize(("stop_reason", "killed", "status", "quiet", "priority"), [
    (None, False, ExitStatus(1, None), False, 3),  # a failure
    (None, False, ExitStatus(None, signal.SIGKILL), False, 3),  # killed by someone else
    (None, False, ExitStatus(0, None), False, 3),  # nobody asked it to go
    (None, False, ExitStatus(0, None), True, 6),  # a clean exit while quiet
    (None, False, ExitStatus(1, None), True, 3),  # a failure while quiet is still one
    (StopReason.STOP, False, ExitStatus(0, None), False, 6),
    (StopReason.DEPLOY, False, ExitStatus(None, signal.SIGTERM), False, 6),
    (StopReason.ROLLBACK, False, ExitStatus(0, None), False, 6),
    (StopReason.REMOVED, False, ExitStatus(0, None), False, 6),
    (StopReason.HUNG, False, ExitStatus(None, signal.SIGTERM), False, 3),
    (StopReason.HEALTH, False, ExitStatus(0, None), False, 3),
    (StopReason.STOP, True, ExitStatus(None, signal.SIGKILL), False, 4),  # after shutdown
])
def test_exit_priority(stop_reason: StopReason | None, killed: bool, status: ExitStatus,
                       quiet: bool,
                       priority: int) -> None:
    assert node_exited(proc(stop_reason, killed), status, quiet).priority == priority


def test_exit_fields_and_text() -> None:
    by_signal = node_exited(proc(StopReason.DEPLOY), ExitStatus(None, signal.SIGTERM), False)
    assert by_signal.kind == "node.exited"
    assert by_signal.message == "node 3 killed by SIGTERM (reload)"
    assert by_signal.fields == {"SWARMD_HEALTH": "exited", "SWARMD_EXIT_SIGNAL": 15}
    assert (by_signal.node.id, by_signal.node.pid, by_signal.node.generation) == (3, 4242, 7)
    by_code = node_exited(proc(), ExitStatus(2, None), False)
    assert by_code.message == "node 3 exited with status 2"
    assert by_code.fields == {"SWARMD_HEALTH": "exited", "SWARMD_EXIT_STATUS": 2}
    detailed = node_exited(proc(StopReason.HEALTH, detail="reported backlog (2)"),
                           ExitStatus(0, None), False)
    assert detailed.message == "node 3 exited with status 0 (reported backlog (2))"


def test_restart_entry() -> None:
    entry = node_restarting(3, proc(), 1.5, 2)
    assert (entry.kind, entry.priority) == ("node.restarting", None)  # the kind's default
    assert entry.message == "node 3 restarts in 1.5s (failure 2 in a row)"
    assert entry.fields == {"SWARMD_RESTART_DELAY_USEC": 1_500_000}
    assert entry.node is not None and entry.node.pid == 4242


def test_restart_entry_after_a_failed_fork_names_the_slot() -> None:
    entry = node_restarting(5, None, 0.0, 1)
    assert entry.node is None
    assert entry.fields == {"SWARMD_RESTART_DELAY_USEC": 0, "SWARMD_NODE_ID": 5}
    assert entry.message == "node 5 restarts in 0s (failure 1 in a row)"
