"""The command line's parser: help that still fits the terminal, and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from swarmd.cli import parser


def test_run_and_check_take_a_config() -> None:
    args = parser().parse_args(["run", "-c", "/tmp/x.yaml"])
    assert args.cmd == "run" and args.config == "/tmp/x.yaml"
    assert parser().parse_args(["check"]).config is None


def test_help_is_wrapped_to_columns(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    out = capsys.readouterr().out
    assert "--config" in out
    assert max(len(line) for line in out.splitlines()) <= 48


def test_parsing_does_not_load_shutil_into_the_supervisor() -> None:
    """shutil brings bz2, lzma and zlib (three shared libraries) into the process every node
    is forked from; argparse imports it only when no width is given."""
    code = ("import sys; from swarmd.cli import parser; parser().parse_args(['run']); "
            "print(sorted(m for m in ('shutil', 'bz2', 'lzma') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
