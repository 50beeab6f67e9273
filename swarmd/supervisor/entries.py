"""The entries about a node's end and its restart: text, priority and fields of node.exited
and node.restarting, worked out from the facts alone, so that the fleet can make them after a
replacement's fork rather than between the death and the fork."""

from __future__ import annotations

from swarmd.config.durations import format_duration
from swarmd.node.process import ExitStatus, NodeProcess
from swarmd.supervisor.recycle import Recycle
from swarmd.systemd.events import Event


def node_exited(proc: NodeProcess, status: ExitStatus, quiet: bool,
                oom: bool | None = False, recycle: Recycle | None = None) -> Event:
    """err for a failure, warning for a node killed after timeouts.shutdown, info for an exit
    that was asked for (or a clean one while swarmd is quiet, or one that was a recycle).
    `oom`: the kernel's OOM killer took it (its cgroup's memory.events says so)."""
    if oom:
        priority = 3
    elif proc.killed:
        priority = 4
    elif proc.stop_reason is not None and proc.stop_reason.expected:
        priority = 6
    else:
        priority = 6 if status.clean and (quiet or recycle is not None) else 3
    fields: dict[str, str | int] = {"SWARMD_HEALTH": "exited"}
    if status.signal is not None:
        fields["SWARMD_EXIT_SIGNAL"] = status.signal
    else:
        fields["SWARMD_EXIT_STATUS"] = status.code if status.code is not None else 0
    what = status.describe()
    if oom:
        fields["SWARMD_OOM"] = 1
        what = "killed by the kernel's OOM killer (SIGKILL)"
    why = f" ({proc.stop_text})" if proc.stop_reason else ""
    return Event("node.exited", f"node {proc.id} {what}{why}", proc.ref, priority, fields)


def node_recycled(proc: NodeProcess, recycle: Recycle) -> Event:
    """A node replaced on purpose (memory, lifetime, a clean exit): never a failure."""
    return Event("node.recycled", f"node {proc.id} recycled: {recycle.figure}", proc.ref, None,
                 {"SWARMD_RECYCLE_REASON": recycle.reason.value})


def node_restarting(slot_id: int, proc: NodeProcess | None, delay: float, failures: int
                    ) -> Event:
    """`proc` is None when the fork itself failed: the slot is named by SWARMD_NODE_ID."""
    fields: dict[str, str | int] = {"SWARMD_RESTART_DELAY_USEC": int(delay * 1_000_000)}
    if proc is None:
        fields["SWARMD_NODE_ID"] = slot_id
    return Event("node.restarting", f"node {slot_id} restarts in {format_duration(delay)} "
                 f"(failure {failures} in a row)", proc.ref if proc else None, None, fields)
