"""The command line's parser: help that still fits the terminal, and a light import."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarmd.cli import parser
from swarmd.control import server
from swarmd.stdio import warn
from swarmd.supervisor.launch import open_control


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


def run_swarmd(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmd", *args], capture_output=True,
                          text=True, timeout=60, **kwargs,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


def test_an_invalid_config_exits_78_even_when_stderr_is_a_full_disk(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("nodes: 0\n")
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC
        done = subprocess.run([sys.executable, "-m", "swarmd", "check", "-c", str(path)],
                              stdout=subprocess.PIPE, stderr=full, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 78


def test_an_invalid_config_exits_78_with_stderr_closed(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("nodes: 0\n")
    done = run_swarmd("check", "-c", str(path), preexec_fn=lambda: os.close(2))
    assert done.returncode == 78


def test_missing_standard_fds_are_held_by_dev_null() -> None:
    code = ("import os, sys; from swarmd.stdio import ensure_std_fds; ensure_std_fds(); "
            "new = os.open('/dev/null', 0); "
            "print(os.readlink('/proc/self/fd/2'), sys.stderr is not None, new > 2)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, preexec_fn=lambda: os.close(2),
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.stdout.split() == ["/dev/null", "True", "True"], done.stderr


def test_a_runtime_path_too_long_for_a_socket_warns_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = str(tmp_path / ("x" * 120))
    assert open_control(directory, lambda request, reply: None) is None
    err = capsys.readouterr().err
    assert "(None)" not in err
    assert err == (f"swarmd: warning: no control socket in {directory} (the socket path "
                   f"{directory}/control.sock is longer than the 107 bytes a unix socket can "
                   f"have); swarmd status/reload/quiet will not reach this supervisor; set "
                   f"RUNTIME_DIRECTORY to a writable directory with a short path\n")


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_runtime_directory_that_cannot_hold_the_socket_is_one_warning_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: int) -> None:
    def fail(directory: str, path: str) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(server, "listen", fail)
    assert open_control("/run/swarmd", lambda request, reply: None) is None
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"swarmd: warning: no control socket in /run/swarmd "
                           f"({os.strerror(error)}); ")


def test_an_unwritable_runtime_directory_is_one_warning_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert open_control("/proc/swarmd-test", lambda request, reply: None) is None
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("swarmd: warning: no control socket in /proc/swarmd-test (")


def test_a_warning_to_a_stderr_that_fails_does_not_raise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Full:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stderr", Full())
    warn("swarmd: warning: this line has nowhere to go")
    monkeypatch.setattr(sys, "stderr", None)
    warn("swarmd: warning: nor this one")
