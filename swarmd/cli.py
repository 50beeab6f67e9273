"""Command line: run, check, status, reload, quiet, install, uninstall (and _candidate, a
deploy's loader)."""

from __future__ import annotations

import argparse
import os
import sys

from swarmd import __version__, config
from swarmd.control import ControlError, runtime_dir
from swarmd.stdio import warn
from swarmd.supervisor.launch import EXIT_CONFIG


def config_path(arg: str | None) -> str:
    return arg or os.environ.get("SWARMD_CONFIG") or config.DEFAULT_PATH


def cmd_check(args: argparse.Namespace) -> int:
    from swarmd.candidate.trial import load_in_a_fork
    from swarmd.supervisor.launch import reject

    path = config_path(args.config)
    cfg = reject(path, load_in_a_fork(path))
    if cfg is None:
        return EXIT_CONFIG
    what = " ".join(cfg.command) if cfg.command else cfg.app
    print(f"{path}: valid: {cfg.nodes} node(s) running {what}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # keep check/status imports light: the supervisor's modules load here only
    from swarmd.supervisor import launch

    if os.environ.get("SWARMD_HANDOVER_FD"):  # the end of a deploy: the new code, same process
        return launch.resume()
    from swarmd.candidate.trial import first_start

    path = config_path(args.config)
    return launch.start(path, *first_start(path))


def cmd_candidate(args: argparse.Namespace) -> int:
    """A deploy's candidate (started by the supervisor, never by hand)."""
    from swarmd.candidate.serve import main as serve
    from swarmd.node.spawn import NodeLimits

    return serve(args.fd, args.supervisor_pid, args.config, args.journal,
                 NodeLimits.from_arg(args.limits), args.cgroups, args.beats)

def _ask(args: argparse.Namespace, payload: dict[str, object], timeout: float | None
         ) -> dict[str, object] | int:
    """The supervisor's reply, or (told on stderr) the LSB exit code for why there is none:
    3 not running or unreachable, 4 insufficient privilege."""
    from swarmd.control import ControlDenied, request

    directory = args.runtime_dir or runtime_dir(args.instance)
    try:
        return request(directory, payload, timeout)
    except ControlError as exc:
        warn(f"swarmd: {exc}")
        return 4 if isinstance(exc, ControlDenied) else 3


def cmd_status(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": "status"}, 10.0)
    if isinstance(reply, int):
        return reply
    if not reply.get("ok", True):
        warn(f"swarmd: {reply.get('error')}")
        return 4  # LSB: insufficient privilege (or another refusal, told above)
    if args.json:
        import json

        print(json.dumps(reply, indent=2))
        return 0
    from swarmd.supervisor.status import NodeRow, format_table

    rows = [NodeRow.from_dict(node) for node in reply.get("nodes", [])]  # type: ignore[union-attr]
    print(f"swarmd (pid {reply.get('pid')}): {reply.get('status')}")
    print(format_table(rows))
    configured = reply.get("configured_nodes")
    if isinstance(configured, int) and configured != len(rows):
        print(f"scaled to {len(rows)} node(s) by `swarmd scale`; the config says {configured} "
              f"(the next deploy scales back to it)")
    deploy = reply.get("deploy")
    if isinstance(deploy, dict) and deploy.get("result") in ("rolled back", "rejected"):
        print(f"last deploy: {deploy['result']}: {deploy.get('reason')}")
    return 0


def _change(args: argparse.Namespace, payload: dict[str, object],
            timeout: float | None) -> int:
    """A command that changes the fleet: its answer (or error) on stderr, exit 0 or 1."""
    reply = _ask(args, payload, timeout)
    if isinstance(reply, int):
        return 1
    print(reply.get("message") or reply.get("error"), file=sys.stderr)
    return 0 if reply.get("ok") else 1


def cmd_reload(args: argparse.Namespace) -> int:
    return _change(args, {"command": "reload"}, None)  # as long as the deploy takes


def cmd_scale(args: argparse.Namespace) -> int:
    return _change(args, {"command": "scale", "nodes": args.nodes}, 10.0)


def cmd_quiet(args: argparse.Namespace) -> int:
    return _change(args, {"command": "quiet"}, 10.0)


def cmd_install(args: argparse.Namespace) -> int:
    from swarmd.install import InstallError, install, uninstall

    try:
        if args.cmd == "install":
            lines = install(args.name, args.config, args.user, args.root, args.print)
        else:
            lines = uninstall(args.name, args.root)
    except (InstallError, OSError) as exc:
        warn(f"swarmd {args.cmd}: {exc}")
        return 1
    print("\n".join(lines))
    return 0


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
                             metavar="{run,check,status,reload,quiet,scale,install,uninstall}")
    for name, func, text in (("run", cmd_run, "run the supervisor in the foreground"),
                             ("check", cmd_check, "validate the config")):
        p = sub.add_parser(name, help=text, formatter_class=_formatter)
        p.add_argument("-c", "--config", help="config file (default: $SWARMD_CONFIG, "
                                              "else /etc/swarmd.yaml)")
        p.set_defaults(func=func)
    for name, func, text in (("status", cmd_status, "show every node of the running swarmd"),
                             ("reload", cmd_reload, "reload and wait until it finished"),
                             ("quiet", cmd_quiet, "quiet every node (SIGTSTP)"),
                             ("scale", cmd_scale, "run N nodes until the next deploy (slots "
                                                  "added or removed, the others untouched)")):
        p = sub.add_parser(name, help=text, formatter_class=_formatter)
        p.add_argument("-i", "--instance", help="the instance of swarmd@INSTANCE.service")
        p.add_argument("--runtime-dir", help="the runtime directory holding control.sock "
                                             "(default: $RUNTIME_DIRECTORY, else /run/swarmd)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "scale":
            p.add_argument("nodes", type=int, help="how many nodes to run")
        p.set_defaults(func=func)
    for name, text in (("install", "write a systemd unit for this venv's swarmd, the journal "
                                    "catalog and (if none) an example config"),
                       ("uninstall", "remove the unit `swarmd install` wrote (never a config)")):
        p = sub.add_parser(name, help=text, description=text, formatter_class=_formatter)
        p.add_argument("--name", default="swarmd", help="the unit's name (default: swarmd)")
        p.add_argument("--root", default="/", help="write under this directory instead of / "
                                                   "(an image being built); nothing is run")
        if name == "install":
            p.add_argument("--config", help="the fleet's config (default: /etc/swarmd.yaml, "
                                            "or /etc/swarmd/NAME.yaml for another --name)")
            p.add_argument("--user", help="run as this existing user instead of a transient "
                                          "one (DynamicUser=yes)")
            p.add_argument("--print", action="store_true",
                           help="print the unit, write nothing")
        p.set_defaults(func=cmd_install)
    p = sub.add_parser("_candidate", formatter_class=_formatter)  # not listed: swarmd's own
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--supervisor-pid", type=int, required=True)
    p.add_argument("--limits", default="-,-")
    p.add_argument("--journal", action="store_true")
    p.add_argument("--cgroups")
    p.add_argument("--beats", type=int)
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_candidate)
    return top


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["run"]:
        # Until its handlers are in, HUP or TERM would end the supervisor, TSTP stop it:
        # held from here, they wait (swarmd/supervisor/signals.py).
        from swarmd.supervisor.held import hold

        hold()
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
