"""Config inputs that once hung, crashed or crash-looped swarmd: each is a ConfigError now, with
its line, and `swarmd check` exits 78 on it (never a traceback).

The loader is run with libyaml's parser and with the pure one (yaml_loader), since hosts differ.
"""

from __future__ import annotations

import os
import threading
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from swarmd.config import ConfigError, document, load, parse

PATH = "cfg.yaml"
LOADERS = {"libyaml": getattr(yaml, "CSafeLoader", None), "pure": yaml.SafeLoader}
# a mapping alias bomb like the issue's: ~300 bytes, each level four times the one before (4^9)
ALIAS_BOMB = "a: &a {k: v}\n" + "".join(
    f"{name}: &{name} {{{','.join(f'{key}: *{prev}' for key in 'pqrs')}}}\n"
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True))


@pytest.fixture(autouse=True, params=[name for name, base in LOADERS.items() if base])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(document, "LOADER", document.make_loader(LOADERS[request.param]))
    return str(request.param)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH)
    assert all("\n" not in problem for problem in caught.value.problems)
    return caught.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def write(tmp_path: Path, data: bytes, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


def load_problem(path: Path | str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    [problem] = caught.value.problems
    return problem


# --- the file ---------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(load_problem(fifo)), daemon=True)
    reader.start()
    reader.join(30)  # a generous bound for a failing test: a blocked open never returns
    if reader.is_alive():
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # let it go (the test failed already)
    assert result == [f"{fifo}: cannot read: a FIFO (named pipe), not a regular file; give the "
                      f"path of a YAML file"]


def test_a_symlink_to_dev_zero_is_refused_before_reading(tmp_path: Path) -> None:
    link = tmp_path / "cfg.yaml"
    link.symlink_to("/dev/zero")
    assert load_problem(link) == (f"{link}: cannot read: a character device, not a regular "
                                  f"file; give the path of a YAML file")


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, b"# " + b"x" * document.MAX_BYTES + b"\n")
    problem = load_problem(path)
    assert problem.startswith(f"{path}: cannot read: the file is {document.MAX_BYTES + 3} bytes")
    assert f"more than the {document.MAX_BYTES} bytes a config may have" in problem


def test_a_file_at_the_size_bound_loads(tmp_path: Path) -> None:
    text = b"nodes: 2\n"
    path = write(tmp_path, text + b"#" * (document.MAX_BYTES - len(text)))
    assert load(str(path)).nodes == 2


def test_text_that_is_not_utf8_names_the_byte_and_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"nodes: 2\napp: caf\xe9:run\n")
    assert load_problem(path) == (f"{path}: not UTF-8 text: byte 0xe9 on line 2 cannot be "
                                  f"decoded (invalid continuation byte); save the file as UTF-8")


def test_a_nul_byte_in_the_file_is_invalid_yaml_at_its_line(tmp_path: Path) -> None:
    problem = load_problem(write(tmp_path, b"nodes: 2\napp: a\x00b\n"))
    assert problem.startswith(f"{tmp_path}/cfg.yaml:2: invalid YAML: "), problem


def test_a_path_with_a_nul_byte_is_refused() -> None:
    assert "cannot read: a path cannot hold a NUL byte" in load_problem("/etc/swarmd\0.yaml")


# --- the YAML ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[" * 3000, "[" * 3000 + "]" * 3000,
                                  "a: " + "{a: " * 3000 + "}" * 3000 + "\n",
                                  "a:\n" + "".join("  " * i + "- \n" for i in range(1, 200))])
def test_deep_nesting_is_refused_at_its_line(text: str) -> None:
    problem = one_problem(text)
    assert problem.startswith("cfg.yaml:1: invalid YAML: ") or "nested deeper" in problem
    assert "nest" in problem, problem


def test_nesting_up_to_the_bound_is_composed() -> None:
    depth = document.MAX_DEPTH - 1  # the top-level mapping is one level
    problem = one_problem("a: " + "[" * depth + "]" * depth + "\n")
    assert problem.startswith("cfg.yaml:1: a: unknown key"), problem


def test_the_mapping_alias_bomb_is_refused_at_once() -> None:
    assert len(ALIAS_BOMB.encode()) < 400
    problem = one_problem(ALIAS_BOMB)
    assert problem.endswith(f"invalid YAML: more than {document.MAX_VALUES} values (aliases "
                            f"expanded); a swarmd config has a few dozen"), problem


def test_a_merge_key_bomb_is_refused() -> None:
    names = ["a"] + [f"m{i}" for i in range(40)]
    text = "a: &a {x: 1, y: 2}\n" + "".join(
        f"{name}: &{name} {{<<: [*{prev}, *{prev}]}}\n" for prev, name in pairwise(names))
    assert f"more than {document.MAX_VALUES} values" in one_problem(text)


def test_too_many_values_are_refused_even_without_aliases() -> None:
    text = "env:\n" + "".join(f"  V{i}: x\n" for i in range(document.MAX_VALUES))
    problem = one_problem(text)
    # 3 values before the first variable (the top mapping, "env", its mapping), then 2 a line
    assert problem.startswith(f"cfg.yaml:{document.MAX_VALUES // 2}: invalid YAML: more "
                              f"than {document.MAX_VALUES} values"), problem


def test_a_structure_that_contains_itself_is_refused() -> None:
    assert one_problem("env: &e {A: *e}\n") == (
        "cfg.yaml:1: invalid YAML: the alias *e is inside the collection it names: a structure "
        "that contains itself")


def test_anchors_and_merge_keys_that_stay_small_still_work() -> None:
    config = parse("health:\n"
                   "  codes:\n"
                   "    2: &log {name: backlog, priority: notice, action: log}\n"
                   "    3: {<<: *log, name: slow}\n"
                   "env: {A: &v shared, B: *v}\n", PATH)
    assert config.health[3].action == "log" and config.health[3].name == "slow"
    assert dict(config.env) == {"A": "shared", "B": "shared"}


def test_an_integer_of_thousands_of_digits_is_refused_at_its_line() -> None:
    assert one_problem("nodes: 2\nrestart: {give_up_after: " + "9" * 5000 + "}\n") == (
        f"cfg.yaml:2: invalid YAML: an integer of 5000 digits (at most "
        f"{document.MAX_INT_DIGITS})")


@pytest.mark.parametrize("text", ["nodes: 2001-13-45\n", "env:\n  2001-02-30: x\n"])
def test_a_date_that_does_not_exist_is_invalid_yaml_not_a_crash(text: str) -> None:
    problem = one_problem(text)
    assert problem.startswith(f"cfg.yaml:{text.count(chr(10))}: invalid YAML: cannot read '20")
    assert "as timestamp: day is out of range" in problem or "month must be" in problem


def test_a_long_value_is_shown_cut_in_its_message() -> None:
    problem = one_problem(f"app: {'x' * 100_000}\n")
    assert len(problem) < 200, problem
    assert problem.startswith("cfg.yaml:1: app: expected \"module:function\"")
    assert problem.endswith("...")


def test_a_key_with_a_newline_or_escape_is_shown_escaped_on_one_line() -> None:
    problem = one_problem('"bad\\nkey\\e[31m": 1\n')
    assert problem.startswith("cfg.yaml:1: bad\\nkey\\x1b[31m: unknown key"), problem


def test_an_app_or_health_name_with_a_trailing_newline_is_refused() -> None:
    assert "app: expected" in one_problem('app: "swarmd.demo:run\\n"\n')
    assert "name: expected a lowercase" in one_problem(
        'health: {codes: {2: {name: "slow\\n"}}}\n')


# --- what a process can be given ---------------------------------------------------------------


def test_a_nul_byte_in_an_env_value_is_refused_at_check_time() -> None:
    assert one_problem('env: {A: "x\\0y"}\n') == (
        "cfg.yaml:1: env.A: the value holds a NUL byte, which no argument or environment "
        "variable can hold")


def test_an_env_name_with_a_newline_is_refused() -> None:
    assert one_problem('env: {"A\\n": x}\n') == (
        "cfg.yaml:1: env.A\\n: not a valid environment variable name")


def test_a_nul_byte_in_a_command_argument_is_refused_at_check_time() -> None:
    assert one_problem('command: ["true", "a\\0b"]\n') == (
        "cfg.yaml:1: command: argument 1 'a\\x00b' holds a NUL byte, which no argument or "
        "environment variable can hold")


def test_a_nul_byte_in_the_program_is_refused_once() -> None:
    assert one_problem('command: ["/bin/tr\\0ue"]\n') == (
        "cfg.yaml:1: command: the program '/bin/tr\\x00ue' holds a NUL byte, which no argument "
        "or environment variable can hold")


def test_an_empty_program_is_refused() -> None:
    assert one_problem('command: [""]\n') == (
        "cfg.yaml:1: command: the program is an empty string; give its path")


def test_a_lone_surrogate_in_an_env_value_is_refused(yaml_loader: str) -> None:
    problem = one_problem('env: {A: "\\ud800"}\n')
    if yaml_loader == "libyaml":  # libyaml refuses the escape itself
        assert problem == "cfg.yaml:1: invalid YAML: found invalid Unicode character escape code"
    else:
        assert problem == ("cfg.yaml:1: env.A: the value holds '\\ud800', which cannot be "
                           "encoded for the operating system (surrogates not allowed)")


def test_an_argument_longer_than_execve_takes_is_refused() -> None:
    problem = one_problem(f'command: ["true", "{"x" * 131072}"]\n')
    assert problem.endswith("is 131072 bytes long, more than the 131071 a process can be given")


def test_command_and_env_together_are_bounded_through_aliases() -> None:
    value = "x" * 100_000
    names = "".join(f"  V{i}: *v\n" for i in range(12))
    problem = one_problem(f"env:\n  V: &v {value}\n{names}")
    assert problem.startswith("cfg.yaml:2: env: command and env together are 1300053 bytes")
    assert "more than the 1048576 a node can be given" in problem
