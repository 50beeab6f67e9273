"""swarmd.config.load: reading the file, and refusing one that others could change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmd.config import ConfigError, load

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    return caught.value.problems


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o400])
def test_a_private_file_loads(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, "nodes: 2\n", mode)
    config = load(str(path))
    assert config.nodes == 2
    assert config.path == str(path)


def test_an_empty_file_loads(tmp_path: Path) -> None:
    assert load(str(write(tmp_path, ""))).nodes == 4


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o602, 0o777])
def test_a_world_writable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, "nodes: 2\n", mode)
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}: file: writable by every user")
    assert f"chmod o-w {path}" in problem


def test_a_file_writable_by_our_own_group_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: 2\n", 0o664)
    os.chown(path, -1, os.getgid())
    assert load(str(path)).nodes == 2


@needs_root
def test_a_file_writable_by_another_group_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: 2\n", 0o664)
    os.chown(path, -1, 54321)
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}: file: writable by group 54321")
    assert f"chmod g-w {path}" in problem


@needs_root
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: 2\n")
    os.chown(path, 54321, -1)
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}: file: owned by uid 54321")
    assert f"chown {os.getuid()} {path}" in problem


def test_permission_and_content_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: 0\ncolour: red\n", 0o666)
    found = load_problems(path)
    assert len(found) == 3
    assert "chmod o-w" in found[0]
    assert found[1].startswith(f"{path}:2: colour: unknown key")
    assert found[2].startswith(f"{path}:1: nodes: must be from 1 to 4096")


def test_a_world_writable_file_with_invalid_yaml_reports_both(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: [2\n", 0o666)
    found = load_problems(path)
    assert any("chmod o-w" in problem for problem in found)
    assert any("invalid YAML" in problem for problem in found)


def test_problems_name_the_path_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: 2\ntimeouts:\n  boot: 1s\n  report: soon\n")
    assert load_problems(path) == [
        f"{path}:4: timeouts.report: expected a duration like 30s, 500ms or 2m, got 'soon'"]


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert load_problems(path) == [f"{path}: cannot read: No such file or directory"]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    [problem] = load_problems(tmp_path)
    assert problem.startswith(f"{tmp_path}: cannot read: ")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"nodes: 2\napp: caf\xe9:run\n")
    os.chmod(path, 0o644)
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}: not UTF-8 text: ")
