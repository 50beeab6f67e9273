"""The command line's parser: help that still fits the terminal, and a light import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("text", ["[" * 3000, "".join(
    f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}]\n"
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True)).replace("*a", "1"),
    'env: {A: "x\\0"}\n', "nodes: 2001-13-45\n"])
def test_swarmd_check_exits_78_with_a_message_not_a_traceback(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "swarmd", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{path}:"), done.stderr
    assert len(done.stderr.splitlines()) == 2, done.stderr  # the problem, then what to do
