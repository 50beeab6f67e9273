"""`swarmd run`: the first start (a trial load, then the supervisor) or the resumption after a
deploy's re-exec. Apart from the CLI, so that the unit's plain `swarmd run -c PATH` never pays
for argparse (swarmd/__main__.py comes straight here).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from swarmd.config import Config, from_data
from swarmd.control import ControlError, runtime_dir
from swarmd.stdio import ensure_std_fds, warn
from swarmd.supervisor.signals import SignalQueue

if TYPE_CHECKING:
    from swarmd.candidate.trial import Trial, TrialResult
    from swarmd.control import ControlServer, Handler
    from swarmd.node.heartbeat import BeatTable
    from swarmd.node.spawn import Forked

EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus=78 stops a restart loop


def reject(path: str, result: TrialResult) -> Config | None:
    """The config a trial load gave, or None after printing why it cannot run."""
    if result.config is None and not result.stopped:
        for problem in result.problems:
            warn(problem)
        warn(f"swarmd: {path} is not valid; fix the lines above, then `swarmd check -c {path}`")
    return result.config


def start(path: str, trial: Trial, beats: BeatTable | None = None) -> int:
    """`swarmd run` with the config at `path`, whose trial load already runs in a child: the
    supervisor imports its modules meanwhile and takes the config; the loader forks the
    fleet while the supervisor imports the app for its own later forks."""
    from swarmd.node.spawn import become_subreaper

    become_subreaper()  # first: the nodes the loader forks are to become ours
    ensure_std_fds()
    signals = SignalQueue()
    signals.install()  # from here on, signals are queued (they were held since main())
    from swarmd.node.apps import PreloadError
    from swarmd.supervisor.core import Supervisor

    result = trial.wait(wake_fd=signals.wake_fd, should_stop=signals.stop_requested)
    cfg = reject(path, result)
    if cfg is None:
        return 0 if result.stopped else EXIT_CONFIG
    supervisor = Supervisor(cfg, signals=signals, beats=beats)
    if result.loader_forks:  # it forks the fleet while we import the app for our later forks
        trial.go(journal=supervisor.journal, cgroups=supervisor.resources.base)
    else:
        trial.end()  # quicker to import the app here and fork in a row
    try:
        supervisor.preload()
    except PreloadError as exc:  # it imported in the loader: it changed meanwhile
        warn(f"swarmd: {exc}")
        _kill(trial.collect() if result.loader_forks else [])
        return EXIT_CONFIG
    forked = trial.collect() if result.loader_forks else []
    try:
        server = open_control(runtime_dir(), supervisor.handle_request)
    except ControlError as exc:
        warn(f"swarmd: {exc}")
        _kill(forked)
        return 1
    if server is not None:
        supervisor.attach_control(server)
    return supervisor.run(forked)


def _kill(forked: list[Forked]) -> None:
    """Nodes a loader forked for a start that does not happen: killed and reaped."""
    import signal

    for node in forked:
        try:
            pidfd = os.pidfd_open(node.pid)
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.waitpid(node.pid, 0)
        except (OSError, ChildProcessError):
            pass
        finally:
            os.close(pidfd)
        for fd in node.read_ends:
            os.close(fd)


def resume() -> int:
    """The end of a deploy: this process re-executed itself into the new code; go on."""
    from swarmd.control import ControlServer
    from swarmd.node.heartbeat import BeatTable
    from swarmd.supervisor import handover
    from swarmd.supervisor.core import Supervisor

    state = handover.take_state()
    assert state is not None
    beats_fd = state.get("beats_fd")
    supervisor = Supervisor(from_data(state["config"]),
                            beats=BeatTable.open(beats_fd) if beats_fd is not None else None)
    if state.get("control"):
        try:
            server = ControlServer.adopt(state["control"], supervisor.handle_request)
        except ControlError as exc:  # the fleet matters more than the socket: go on without
            warn(f"swarmd: warning: {exc}; swarmd status/reload/quiet will not reach this "
                 f"supervisor until it is restarted")
        else:
            open_status(server)  # adopted, or new where the image before had none
            supervisor.attach_control(server)
    return supervisor.resume(state)


def open_control(directory: str, handler: Handler) -> ControlServer | None:
    """The control socket, or None after one warning line when the runtime directory cannot
    hold it (unwritable, full, a path too long for a socket): swarmd runs on without it.
    ControlError (another swarmd listens there) is the caller's: that one must not start."""
    from swarmd.control import ControlServer

    try:
        server = ControlServer(directory, handler)
    except OSError as exc:
        reason = exc.strerror or str(exc)  # "AF_UNIX path too long" has no strerror
        warn(f"swarmd: warning: no control socket in {directory} ({reason}); swarmd "
             f"status/reload/quiet will not reach this supervisor; set RUNTIME_DIRECTORY to a "
             f"writable directory with a short path")
        return None
    open_status(server)
    return server


def open_status(server: ControlServer) -> None:
    """The read-only status socket beside the control socket; without it (one warning line)
    only root and the service's user can ask for status."""
    try:
        server.open_status()
    except (OSError, ControlError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        warn(f"swarmd: warning: no status socket at {server.status_path} ({reason}); only root "
             f"and the service's user can run swarmd status")
