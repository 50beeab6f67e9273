"""A deploy's candidate process: load the new version, then fork its nodes on request.

Started by the supervisor (`python -m swarmd _candidate`, the swarmd code now on disk) with one
end of a socket pair as fd 3. It is fenced like a node (it dies with the supervisor) and ends
when the supervisor closes the socket or kills it. Each node it forks goes through an
intermediate process, so that it becomes the supervisor's child.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from swarmd.candidate.channel import Channel
from swarmd.candidate.load import load_version
from swarmd.candidate.wire import ChannelClosed, Kind
from swarmd.node import child
from swarmd.node.heartbeat import BeatTable
from swarmd.node.spawn import NodeLimits, Recipe, spawn_through_intermediate


def main(fd: int, supervisor_pid: int, config_path: str, journal: bool,
         limits: NodeLimits, cgroups: str | None = None, beats_fd: int | None = None) -> int:
    child.prctl_pdeathsig(signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        return 1  # the supervisor is already gone
    # A signal for the whole unit (systemctl kill) is meant for the supervisor's fleet.
    for sig in (signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=fd))

    def send(kind: Kind, **fields: Any) -> None:
        channel.send(kind, **fields)

    try:
        loaded = load_version(config_path, send, throwaway=False)
        if loaded is None:
            return 0
        recipe = Recipe(app=loaded.app, command=loaded.config.command,
                        env=dict(loaded.config.env), journal=journal, limits=limits,
                        supervisor_pid=supervisor_pid, output=loaded.config.output,
                        cgroups=cgroups, app_name=loaded.config.app,
                        beats=BeatTable.open(beats_fd) if beats_fd is not None else None)
        serve(channel, recipe)
    except ChannelClosed:
        pass  # the supervisor is done with this version
    return 0


def serve(channel: Channel, recipe: Recipe) -> None:
    """Fork a node for each spawn request, until the supervisor closes the channel."""
    while True:
        for message, fds in channel.receive():
            if message.get("t") != Kind.SPAWN.value:
                continue
            slot, generation = int(message["slot"]), int(message["generation"])
            try:
                spec = recipe.spec(slot, generation, fds, [channel.fileno()])  # type: ignore[arg-type]

                def announce(pid: int, slot: int = slot, generation: int = generation) -> None:
                    channel.send(Kind.SPAWNED, slot=slot, generation=generation, pid=pid)

                intermediate = spawn_through_intermediate(spec, announce)
                _, status = os.waitpid(intermediate, 0)
                if status != 0:
                    channel.send(Kind.SPAWN_FAILED, slot=slot, generation=generation,
                                 reason=f"the intermediate process failed (wait status "
                                        f"{status})")
            except OSError as exc:
                channel.send(Kind.SPAWN_FAILED, slot=slot, generation=generation,
                             reason=f"fork failed: {exc.strerror or exc}")
            finally:
                for fd in fds:
                    os.close(fd)
