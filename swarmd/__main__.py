"""`python -m swarmd` is the same program as `swarmd` (the console script calls main too)."""

import sys


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        # First thing: until the supervisor's handlers are in, HUP or TERM would end it and
        # TSTP stop it; held, they wait for the loop (swarmd/supervisor/signals.py).
        from swarmd.supervisor.signals import hold

        hold()
    from swarmd.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
