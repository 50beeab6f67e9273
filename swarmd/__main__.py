"""`python -m swarmd` is the same program as `swarmd` (the console script calls main too)."""

import os
import sys


def _plain_run(args: list[str]) -> str | None:
    """The config path of `run`, `run -c PATH`, `run --config PATH` or `run --config=PATH`
    (the unit's ExecStart); None for anything else, which argparse then reads."""
    if not args:
        return os.environ.get("SWARMD_CONFIG") or "/etc/swarmd.yaml"
    if len(args) == 2 and args[0] in ("-c", "--config") and args[1] and args[1][0] != "-":
        return args[1]
    if len(args) == 1 and args[0].startswith("--config=") and len(args[0]) > 9:
        return args[0][9:]
    return None


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        # First thing: until the supervisor's handlers are in, HUP or TERM would end it and
        # TSTP stop it; held, they wait for the loop (swarmd/supervisor/signals.py).
        from swarmd.supervisor.held import hold

        hold()
        from swarmd.stdio import ensure_std_fds

        ensure_std_fds()  # before the first pipe: it must not get fd 0, 1 or 2
        path = _plain_run(sys.argv[2:])
        if path is not None and not os.environ.get("SWARMD_HANDOVER_FD"):
            # The config and app are tried in a child from here on, while this process
            # imports the supervisor: both take tens of milliseconds of every start.
            from swarmd.candidate.trial import first_start

            trial, beats = first_start(path)
            from swarmd.supervisor.launch import start

            return start(path, trial, beats)
    from swarmd.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
