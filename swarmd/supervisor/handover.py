"""The end of a deploy: the supervisor re-executes itself into the swarmd code now on disk.

Same PID (systemd's MainPID does not change), same nodes: their pidfds and pipes, the control
socket and the clients waiting for the deploy's answer cross the exec as inherited fds; what
the supervisor knew of them crosses as JSON in a memfd named by SWARMD_HANDOVER_FD. Signals are
held (blocked) from before the exec until the new code's handlers are in, so none is lost and
none is fatal. CLOCK_MONOTONIC, and so every deadline, is the same on both sides.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

from swarmd.node.process import NodeProcess, State, StopReason
from swarmd.stdio import flush_std_streams
from swarmd.supervisor.backoff import Backoff
from swarmd.supervisor.signals import SignalQueue
from swarmd.supervisor.slot import DownReason, Slot

HANDOVER_ENV = "SWARMD_HANDOVER_FD"
FORMAT = 1  # bumped when the state's shape changes in a way an older reader cannot take


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def proc_state(proc: NodeProcess) -> dict[str, Any]:
    return {
        "id": proc.id, "generation": proc.generation, "pid": proc.pid, "pidfd": proc.pidfd,
        "health_fd": proc.health_fd,
        "output_fds": {str(fd): priority for fd, priority in proc.output_fds.items()},
        "started_at": proc.started_at, "is_command": proc.is_command,
        "state": proc.state.value, "first_report_at": proc.first_report_at,
        "last_report_at": proc.last_report_at, "healthy_since": proc.healthy_since,
        "code": proc.code,
        "stop_reason": proc.stop_reason.value if proc.stop_reason else None,
        "stop_detail": proc.stop_detail, "term_sent_at": proc.term_sent_at,
        "killed": proc.killed, "drain_started_at": proc.drain_started_at,
        "reports": proc.reports, "beats_seen": proc.beats_seen,
        # a line half-written when the exec came is finished after it
        "health_partial": _b64(proc._health._partial),
        "output_partials": {str(fd): _b64(proc._splitters[fd]._partial)
                            for fd in proc.output_fds},
    }


def proc_from_state(data: dict[str, Any]) -> NodeProcess:
    proc = NodeProcess(data["id"], data["generation"], data["pid"], data["pidfd"],
                       data["health_fd"], -1, -1, data["started_at"], data["is_command"])
    proc.restore_outputs({int(fd): int(priority)
                          for fd, priority in data["output_fds"].items()})
    proc.state = State(data["state"])
    proc.first_report_at = data["first_report_at"]
    proc.last_report_at = data["last_report_at"]
    proc.healthy_since = data["healthy_since"]
    proc.code = data["code"]
    proc.stop_reason = StopReason(data["stop_reason"]) if data["stop_reason"] else None
    proc.stop_detail = data["stop_detail"]
    proc.term_sent_at = data["term_sent_at"]
    proc.killed = data["killed"]
    proc.drain_started_at = data["drain_started_at"]
    proc.reports = int(data.get("reports", 0))
    proc.beats_seen = int(data.get("beats_seen", 0))
    proc._health._partial = base64.b64decode(data["health_partial"])
    proc._health.at_line_start = not proc._health._partial
    for fd, partial in data["output_partials"].items():
        proc._splitters[int(fd)]._partial = base64.b64decode(partial)
    return proc


def slot_state(slot: Slot) -> dict[str, Any]:
    return {"id": slot.id, "generation": slot.generation, "restarts": slot.restarts,
            "failures": slot.backoff.failures, "restart_at": slot.restart_at,
            "down_reason": slot.down_reason.value if slot.down_reason else None,
            "proc": proc_state(slot.proc) if slot.proc is not None else None}


def slot_from_state(data: dict[str, Any], backoff: Backoff) -> Slot:
    slot = Slot(data["id"], backoff)
    slot.generation = data["generation"]
    slot.restarts = data["restarts"]
    backoff.failures = data["failures"]
    slot.restart_at = data["restart_at"]
    slot.down_reason = DownReason(data["down_reason"]) if data["down_reason"] else None
    return slot


def inherited_fds(state: dict[str, Any]) -> list[int]:
    """Every fd the state names: they must survive the exec, and only the exec."""
    control = state.get("control")
    fds = [control["listen"], *(client["fd"] for client in control["clients"])] \
        if control else []
    if control and control.get("status_listen") is not None:
        fds.append(control["status_listen"])
    if state.get("beats_fd") is not None:
        fds.append(state["beats_fd"])
    telemetry = state.get("telemetry") or {}
    if telemetry.get("listen_fd") is not None:
        fds.append(telemetry["listen_fd"])
    for slot in state["slots"]:
        proc = slot["proc"]
        if proc is None:
            continue
        fds.extend(fd for fd in (proc["pidfd"], proc["health_fd"]) if fd is not None)
        fds.extend(int(fd) for fd in proc["output_fds"])
    return fds


def execute(state: dict[str, Any], *, argv: list[str], environment: dict[str, str],
            signals: SignalQueue) -> None:
    """Re-execute this process (`argv`: how it was started) into the swarmd code on disk;
    `environment` is what the supervisor took out of its own (the notify variables). Returns
    only if the exec failed (then every fd is private again and the signals are back)."""
    fds = inherited_fds(state)
    memfd = os.memfd_create("swarmd-handover", 0)  # no MFD_CLOEXEC: the new code reads it
    data = json.dumps({"format": FORMAT, **state}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(memfd, view):]
    os.lseek(memfd, 0, os.SEEK_SET)
    env = dict(os.environ)
    env.update(environment)  # taken out of ours at start, for the nodes' sake
    env[HANDOVER_ENV] = str(memfd)
    flush_std_streams()
    signals.hold_for_exec()
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        for fd in fds:
            os.set_inheritable(fd, False)
        os.close(memfd)
        signals.install()
        raise


def take_state(environ: dict[str, str] | os._Environ[str] | None = None) -> dict[str, Any] | None:
    """In a re-executed supervisor: the state the old code left, or None at a first start."""
    env = os.environ if environ is None else environ
    value = env.pop(HANDOVER_ENV, None)
    if value is None:
        return None
    fd = int(value)
    chunks = []
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            chunks.append(chunk)
    state: dict[str, Any] = json.loads(b"".join(chunks))
    if state.get("format") != FORMAT:
        raise ValueError(f"hand-over state of format {state.get('format')}, this swarmd reads "
                         f"{FORMAT}")
    for fd in inherited_fds(state):
        os.set_inheritable(fd, False)  # never into a candidate or a node's exec
    return state

