"""Command line: run, check, status, reload, quiet (and _candidate, a deploy's loader)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from swarmd import __version__, config
from swarmd.control import ControlError, runtime_dir

if TYPE_CHECKING:
    from swarmd.candidate.trial import TrialResult

EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus=78 stops a restart loop


def config_path(arg: str | None) -> str:
    return arg or os.environ.get("SWARMD_CONFIG") or config.DEFAULT_PATH


def _reject(path: str, result: TrialResult) -> config.Config | None:
    """The config a trial load gave, or None after printing why it cannot run."""
    if result.config is None and not result.stopped:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        print(f"swarmd: {path} is not valid; fix the lines above, then `swarmd check -c {path}`",
              file=sys.stderr)
    return result.config


def cmd_check(args: argparse.Namespace) -> int:
    from swarmd.candidate.trial import load_in_a_fork

    path = config_path(args.config)
    cfg = _reject(path, load_in_a_fork(path))
    if cfg is None:
        return EXIT_CONFIG
    what = " ".join(cfg.command) if cfg.command else cfg.app
    print(f"{path}: valid: {cfg.nodes} node(s) running {what}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # keep check/status imports light: the supervisor's modules load here only
    from swarmd.supervisor.signals import SignalQueue

    if os.environ.get("SWARMD_HANDOVER_FD"):  # the end of a deploy: the new code, same process
        return _resume()
    path = config_path(args.config)
    signals = SignalQueue()
    signals.install()  # from here on, signals are queued (they were held since main())
    from swarmd.candidate.trial import Trial

    trial = Trial(path)  # the config and app are tried in a child while we import the rest
    from swarmd.control import ControlServer
    from swarmd.node.apps import PreloadError
    from swarmd.supervisor.core import Supervisor

    result = trial.wait(wake_fd=signals.wake_fd, should_stop=signals.stop_requested)
    cfg = _reject(path, result)
    if cfg is None:
        return 0 if result.stopped else EXIT_CONFIG
    supervisor = Supervisor(cfg, signals=signals)
    try:
        supervisor.preload()
    except PreloadError as exc:
        print(f"swarmd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    directory = runtime_dir()
    try:
        supervisor.attach_control(ControlServer(directory, supervisor.handle_request))
    except ControlError as exc:
        print(f"swarmd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"swarmd: warning: no control socket in {directory} ({exc.strerror}); "
              f"swarmd status/reload/quiet will not reach this supervisor; set "
              f"RUNTIME_DIRECTORY to a writable directory", file=sys.stderr)
    return supervisor.run()


def _resume() -> int:
    from swarmd.control import ControlServer
    from swarmd.supervisor import handover
    from swarmd.supervisor.core import Supervisor

    state = handover.take_state()
    assert state is not None
    supervisor = Supervisor(config.from_data(state["config"]))
    if state.get("control"):
        supervisor.attach_control(ControlServer(runtime_dir(), supervisor.handle_request,
                                                adopt=state["control"]))
    return supervisor.resume(state)


def cmd_candidate(args: argparse.Namespace) -> int:
    """A deploy's candidate (started by the supervisor, never by hand)."""
    from swarmd.candidate.serve import main as serve
    from swarmd.node.spawn import NodeLimits

    return serve(args.fd, args.supervisor_pid, args.config, args.journal,
                 NodeLimits.from_arg(args.limits))


def _ask(args: argparse.Namespace, payload: dict[str, object], timeout: float | None
         ) -> dict[str, object] | None:
    from swarmd.control import request

    directory = args.runtime_dir or runtime_dir(args.instance)
    try:
        return request(directory, payload, timeout)
    except ControlError as exc:
        print(f"swarmd: {exc}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": "status"}, 10.0)
    if reply is None:
        return 3  # LSB: program is not running
    if args.json:
        import json

        print(json.dumps(reply, indent=2))
        return 0
    from swarmd.supervisor.status import NodeRow, format_table

    rows = [NodeRow.from_dict(node) for node in reply.get("nodes", [])]  # type: ignore[union-attr]
    print(f"swarmd (pid {reply.get('pid')}): {reply.get('status')}")
    print(format_table(rows))
    deploy = reply.get("deploy")
    if isinstance(deploy, dict) and deploy.get("result") in ("rolled back", "rejected"):
        print(f"last deploy: {deploy['result']}: {deploy.get('reason')}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": "reload"}, None)
    if reply is None:
        return 1
    print(reply.get("message") or reply.get("error"), file=sys.stderr)
    return 0 if reply.get("ok") else 1


def cmd_quiet(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": "quiet"}, 10.0)
    if reply is None:
        return 1
    print(reply.get("message") or reply.get("error"), file=sys.stderr)
    return 0 if reply.get("ok") else 1


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help formatter, given the terminal width so that it does not `import shutil`
    for it: that loads bz2, lzma and zlib into the supervisor every node is forked from (the
    fork, and each node's exit, get slower with every mapping)."""
    try:
        width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
    except (ValueError, OSError):
        width = 80
    return argparse.HelpFormatter(prog, width=max(width, 40) - 2)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="swarmd", description=__doc__, formatter_class=_formatter)
    top.add_argument("--version", action="version", version=f"swarmd {__version__}")
    sub = top.add_subparsers(dest="cmd", required=True,
                             metavar="{run,check,status,reload,quiet}")
    for name, func, text in (("run", cmd_run, "run the supervisor in the foreground"),
                             ("check", cmd_check, "validate the config")):
        p = sub.add_parser(name, help=text, formatter_class=_formatter)
        p.add_argument("-c", "--config", help="config file (default: $SWARMD_CONFIG, "
                                              "else /etc/swarmd.yaml)")
        p.set_defaults(func=func)
    for name, func, text in (("status", cmd_status, "show every node of the running swarmd"),
                             ("reload", cmd_reload, "reload and wait until it finished"),
                             ("quiet", cmd_quiet, "quiet every node (SIGTSTP)")):
        p = sub.add_parser(name, help=text, formatter_class=_formatter)
        p.add_argument("-i", "--instance", help="the instance of swarmd@INSTANCE.service")
        p.add_argument("--runtime-dir", help="the runtime directory holding control.sock "
                                             "(default: $RUNTIME_DIRECTORY, else /run/swarmd)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
    p = sub.add_parser("_candidate", formatter_class=_formatter)  # not listed: swarmd's own
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--supervisor-pid", type=int, required=True)
    p.add_argument("--limits", default="-,-")
    p.add_argument("--journal", action="store_true")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_candidate)
    return top


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["run"]:
        # Until its handlers are in, HUP or TERM would end the supervisor, TSTP stop it:
        # held from here, they wait (swarmd/supervisor/signals.py).
        from swarmd.supervisor.signals import hold

        hold()
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
