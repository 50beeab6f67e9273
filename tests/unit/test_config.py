"""swarmd.config.parse: every key of DESIGN.md, its default, and the one-line-per-problem errors.

Durations live in test_config_durations.py, load() and the file checks in test_config_load.py.
"""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from swarmd.config import (
    RESERVED_ENV,
    Config,
    ConfigError,
    RestartPolicy,
    Timeouts,
    document,
    parse,
)
from swarmd.config.health import HealthCode, HealthTable

PATH = "cfg.yaml"
LOADERS = {"libyaml": getattr(yaml, "CSafeLoader", None), "pure": yaml.SafeLoader}


@pytest.fixture(autouse=True, params=[name for name, base in LOADERS.items() if base])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test with libyaml's parser (where PyYAML has it) and with the pure one: a host
    without libyaml must refuse and accept the same files with the same messages."""
    monkeypatch.setattr(document, "LOADER", document.make_loader(LOADERS[request.param]))


def problems(text: str) -> list[str]:
    """The problems parse() reports for `text`; fails the test if the text is accepted."""
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- defaults -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# nothing but a comment\n", "---\n", "{}\n"])
def test_an_empty_file_is_the_default_config(text: str) -> None:
    config = parse(text, PATH)
    assert config == Config(path=PATH)


def test_the_defaults_are_those_of_the_design() -> None:
    config = parse("", PATH)
    assert config.nodes == 4
    assert config.app == "swarmd.demo:run"
    assert config.command is None
    assert config.preload is True
    assert config.node_id_offset == 0
    assert dict(config.env) == {}
    assert config.timeouts == Timeouts(boot=60.0, report=60.0, shutdown=30.0, drain=30.0)
    assert config.restart == RestartPolicy(delay=1.0, max_delay=60.0, reset_after=60.0,
                                           give_up_after=10)
    assert config.reload == "rolling"
    assert config.health == HealthTable()
    assert list(config.node_ids) == [0, 1, 2, 3]


@pytest.mark.parametrize("section", ["env", "timeouts", "restart", "health"])
def test_an_empty_section_means_its_defaults(section: str) -> None:
    assert parse(f"{section}:\n", PATH) == Config(path=PATH)


def test_the_example_of_the_design_parses() -> None:
    config = parse(
        "nodes: 3\n"
        "app: swarmd.demo:run\n"
        "preload: false\n"
        "node_id_offset: 10\n"
        "env: {QUEUE: q1}\n"
        "timeouts:\n"
        "  boot: 5s\n"
        "  report: 2m\n"
        "  shutdown: 500ms\n"
        "  drain: 1h\n"
        "restart:\n"
        "  delay: 0\n"
        "  max_delay: 30s\n"
        "  reset_after: 10m\n"
        "  give_up_after: 0\n"
        "reload: quiet\n"
        "health:\n"
        "  codes:\n"
        "    2: {name: backlog, priority: notice, action: log}\n"
        "    3: {name: memory_limit, priority: err, action: restart}\n",
        PATH,
    )
    assert config.nodes == 3
    assert config.preload is False
    assert list(config.node_ids) == [10, 11, 12]
    assert dict(config.env) == {"QUEUE": "q1"}
    assert config.timeouts == Timeouts(boot=5.0, report=120.0, shutdown=0.5, drain=3600.0)
    assert config.restart == RestartPolicy(delay=0.0, max_delay=30.0, reset_after=600.0,
                                           give_up_after=0)
    assert config.reload == "quiet"
    assert config.health[2] == HealthCode(2, "backlog", "notice", "log")
    assert config.health[3] == HealthCode(3, "memory_limit", "err", "restart")
    assert config.path == PATH


# --- top-level keys -------------------------------------------------------------------------


def test_nodes_auto_is_one_per_usable_cpu() -> None:
    assert parse("nodes: auto\n", PATH).nodes == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, expected", [("1", 1), ("4", 4), ("4096", 4096)])
def test_nodes_accepts_integers_from_1_to_4096(value: str, expected: int) -> None:
    assert parse(f"nodes: {value}\n", PATH).nodes == expected


@pytest.mark.parametrize("app", ["worker:run", "my_app.worker:run", "a.b.c:Main.run", "_x:_y"])
def test_app_accepts_module_colon_function(app: str) -> None:
    assert parse(f"app: {app}\n", PATH).app == app


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False)])
def test_preload_is_a_boolean(value: str, expected: bool) -> None:
    assert parse(f"preload: {value}\n", PATH).preload is expected


@pytest.mark.parametrize("offset", [0, 7, 1_000_000])
def test_node_id_offset_shifts_the_node_ids(offset: int) -> None:
    config = parse(f"nodes: 2\nnode_id_offset: {offset}\n", PATH)
    assert list(config.node_ids) == [offset, offset + 1]


@pytest.mark.parametrize("mode", ["rolling", "quiet"])
def test_reload_modes(mode: str) -> None:
    assert parse(f"reload: {mode}\n", PATH).reload == mode


@pytest.mark.parametrize(
    "text, prefix, fragment",
    [
        ("nodes: 0\n", "cfg.yaml:1: nodes:", "from 1 to 4096, got 0"),
        ("nodes: -1\n", "cfg.yaml:1: nodes:", "from 1 to 4096"),
        ("nodes: 4097\n", "cfg.yaml:1: nodes:", "from 1 to 4096"),
        ("nodes: '4'\n", "cfg.yaml:1: nodes:", "expected an integer"),
        ("nodes: 2.5\n", "cfg.yaml:1: nodes:", "expected an integer"),
        ("nodes: true\n", "cfg.yaml:1: nodes:", "expected an integer"),
        ("nodes: many\n", "cfg.yaml:1: nodes:", "expected an integer"),
        ("nodes:\n", "cfg.yaml:1: nodes:", "expected an integer, got nothing"),
        ("app: worker\n", "cfg.yaml:1: app:", '"module:function"'),
        ("app: 'worker:'\n", "cfg.yaml:1: app:", '"module:function"'),
        ("app: 'a b:run'\n", "cfg.yaml:1: app:", '"module:function"'),
        ("app: 3\n", "cfg.yaml:1: app:", "got 3"),
        ("app: [a, b]\n", "cfg.yaml:1: app:", "got a list"),
        ("preload: 'yes'\n", "cfg.yaml:1: preload:", "expected true or false"),
        ("preload: 1\n", "cfg.yaml:1: preload:", "expected true or false"),
        ("node_id_offset: -1\n", "cfg.yaml:1: node_id_offset:", "from 0 to 1000000"),
        ("node_id_offset: 1000001\n", "cfg.yaml:1: node_id_offset:", "from 0 to 1000000"),
        ("node_id_offset: x\n", "cfg.yaml:1: node_id_offset:", "expected an integer"),
        ("reload: fast\n", "cfg.yaml:1: reload:", "expected rolling or quiet, got 'fast'"),
        ("reload:\n", "cfg.yaml:1: reload:", "expected rolling or quiet, got nothing"),
        ("env: [A]\n", "cfg.yaml:1: env:", "expected a mapping, got a list"),
        ("env: A=1\n", "cfg.yaml:1: env:", "expected a mapping"),
        ("timeouts: 5\n", "cfg.yaml:1: timeouts:", "expected a mapping, got 5"),
        ("restart: [1s]\n", "cfg.yaml:1: restart:", "expected a mapping, got a list"),
        ("restart:\n  give_up_after: -1\n", "cfg.yaml:2: restart.give_up_after:", ">= 0"),
        ("restart:\n  give_up_after: '3'\n", "cfg.yaml:2: restart.give_up_after:",
         "expected an integer"),
        ("restart:\n  give_up_after: 1.5\n", "cfg.yaml:2: restart.give_up_after:",
         "expected an integer"),
        ("health: 3\n", "cfg.yaml:1: health:", "expected a mapping"),
        ("health:\n  codes: [2]\n", "cfg.yaml:2: health.codes:", "expected a mapping"),
    ],
)
def test_wrong_types_and_out_of_range_values(text: str, prefix: str, fragment: str) -> None:
    problem = one_problem(text)
    assert problem.startswith(prefix + " "), problem
    assert fragment in problem


# --- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, prefix",
    [
        ("nodes: 2\ncolour: red\n", "cfg.yaml:2: colour:"),
        ("timeouts:\n  boot: 1s\n  hung: 2s\n", "cfg.yaml:3: timeouts.hung:"),
        ("restart:\n  attempts: 3\n", "cfg.yaml:2: restart.attempts:"),
        ("health:\n  levels: {}\n", "cfg.yaml:2: health.levels:"),
        ("health:\n  codes:\n    2:\n      name: backlog\n      colour: red\n",
         "cfg.yaml:5: health.codes.2.colour:"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(text: str, prefix: str) -> None:
    problem = one_problem(text)
    assert problem.startswith(prefix + " unknown key"), problem


@pytest.mark.parametrize(
    "text, line",
    [
        ("health:\n  codes:\n    true: {name: x}\n", 3),
        ("health:\n  codes:\n    0x10: {name: X}\n", 3),
        ("env:\n  yes: 1\n", 2),
        ("nodes: 2\n~: 1\n", 2),
    ],
)
def test_keys_spelled_differently_from_their_value_still_get_a_line(text: str,
                                                                    line: int) -> None:
    assert one_problem(text).startswith(f"cfg.yaml:{line}: ")


def test_an_unknown_key_lists_the_known_ones() -> None:
    assert "known keys: boot, report, shutdown, drain" in one_problem("timeouts: {boot2: 1s}\n")


def test_an_unknown_key_is_reported_at_its_own_line_not_its_values() -> None:
    assert one_problem("nodes: 2\nworkers:\n  count: 3\n").startswith("cfg.yaml:2: workers:")


def test_every_problem_is_one_line_with_its_key_path_and_yaml_line() -> None:
    found = problems(
        "nodes: 0\n"             # 1
        "app: swarmd.demo:run\n"  # 2
        "timeouts:\n"             # 3
        "  boot: 1s\n"            # 4
        "  report: abc\n"         # 5
        "restart:\n"              # 6
        "  delay: -1\n"           # 7
        "reload: sideways\n"      # 8
        "extra: 1\n"              # 9
    )
    assert [problem.split(" ", 2)[:2] for problem in found] == [
        ["cfg.yaml:9:", "extra:"],
        ["cfg.yaml:1:", "nodes:"],
        ["cfg.yaml:5:", "timeouts.report:"],
        ["cfg.yaml:7:", "restart.delay:"],
        ["cfg.yaml:8:", "reload:"],
    ]
    assert all("\n" not in problem for problem in found)


def test_the_path_given_to_parse_names_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("nodes: 0\n", "/etc/swarmd/fleet.yaml")
    assert caught.value.problems[0].startswith("/etc/swarmd/fleet.yaml:1: nodes:")


# --- invalid YAML ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line",
    [
        ("nodes: 2\napp: a: b\n", 2),
        ("nodes: 2\nreload: rolling\n\ttimeouts: {}\n", 3),
        ("nodes: 2\n---\nnodes: 3\n", 2),
        ("nodes: 2\nenv: {A: 1\n", 3),
    ],
)
def test_invalid_yaml_reports_its_line(text: str, line: int) -> None:
    problem = one_problem(text)
    assert problem.startswith(f"cfg.yaml:{line}: invalid YAML: "), problem


@pytest.mark.parametrize("text, got", [("- a\n- b\n", "a list"), ("42\n", "42"),
                                       ("just words\n", "'just words'")])
def test_the_top_level_must_be_a_mapping(text: str, got: str) -> None:
    assert one_problem(text) == f"cfg.yaml: the top level must be a mapping of keys, got {got}"


# --- app vs command -------------------------------------------------------------------------


def test_command_is_an_argv_list_and_numbers_become_strings() -> None:
    config = parse(f"command: [{sys.executable}, -m, worker, --port, 8080]\n", PATH)
    assert config.command == (sys.executable, "-m", "worker", "--port", "8080")


def test_a_command_without_a_slash_is_looked_up_on_path() -> None:
    assert parse("command: [sh, -c, 'exit 0']\n", PATH).command == ("sh", "-c", "exit 0")


def test_a_command_given_as_a_string_is_refused_no_shell_is_used() -> None:
    problem = one_problem(f"command: '{sys.executable} -m worker'\n")
    assert problem.startswith("cfg.yaml:1: command: expected a list like")
    assert "no shell is used" in problem


@pytest.mark.parametrize("value", ["[]", "{a: 1}", "[[a]]", "[true]", "[null]", "3", "null"])
def test_a_command_must_be_a_non_empty_list_of_strings(value: str) -> None:
    problem = one_problem(f"command: {value}\n")
    assert problem.startswith("cfg.yaml:1: command: expected a non-empty list of strings")


def test_a_command_naming_a_missing_file_is_refused() -> None:
    problem = one_problem("command: [/nonexistent/bin/worker, --queue, q1]\n")
    assert problem == "cfg.yaml:1: command: /nonexistent/bin/worker is not an executable file"


def test_a_command_naming_a_non_executable_file_is_refused(tmp_path) -> None:
    script = tmp_path / "worker"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert one_problem(f"command: [{script}]\n").endswith(f"{script} is not an executable file")


def test_a_command_naming_a_directory_is_refused(tmp_path) -> None:
    assert one_problem(f"command: [{tmp_path}]\n").endswith("is not an executable file")


def test_a_command_not_on_path_is_refused() -> None:
    problem = one_problem("command: [swarmd-no-such-program-here]\n")
    assert problem == ("cfg.yaml:1: command: swarmd-no-such-program-here is not found on PATH; "
                       "give its absolute path")


def test_app_and_command_together_are_refused() -> None:
    problem = one_problem(f"app: swarmd.demo:run\ncommand: [{sys.executable}]\n")
    assert problem == "cfg.yaml:2: command: give either app or command, not both"


def test_the_command_problem_is_reported_at_the_line_of_the_list() -> None:
    problem = one_problem("nodes: 2\ncommand:\n  - /nonexistent/worker\n")
    assert problem.startswith("cfg.yaml:3: command: ")


# --- env ------------------------------------------------------------------------------------


def test_env_values_are_strings_and_numbers_are_accepted_as_strings() -> None:
    config = parse("env:\n  QUEUE: q1\n  PORT: 8080\n  RATIO: 0.5\n  EMPTY: ''\n", PATH)
    assert dict(config.env) == {"QUEUE": "q1", "PORT": "8080", "RATIO": "0.5", "EMPTY": ""}


@pytest.mark.parametrize("written", ["1.10", "0123"])
def test_env_numbers_keep_the_text_the_operator_wrote(written: str) -> None:
    assert dict(parse(f"env:\n  VERSION: {written}\n", PATH).env) == {"VERSION": written}


@pytest.mark.parametrize("name", RESERVED_ENV)
def test_reserved_env_names_are_refused(name: str) -> None:
    problem = one_problem(f"env:\n  QUEUE: q1\n  {name}: x\n")
    assert problem == (f"cfg.yaml:3: env.{name}: is set by swarmd itself and cannot be "
                       f"configured")


@pytest.mark.parametrize("name", ["1BAD", "A-B", "'A B'", "'A=B'", "''", "3"])
def test_invalid_env_names_are_refused(name: str) -> None:
    problem = one_problem(f"env:\n  {name}: x\n")
    assert problem.startswith("cfg.yaml:2: env.")
    assert problem.endswith(": not a valid environment variable name")


@pytest.mark.parametrize("value, got", [("true", "True"), ("null", "nothing"), ("", "nothing"),
                                        ("[a]", "a list"), ("{a: 1}", "a dict")])
def test_env_values_that_are_not_scalars_are_refused(value: str, got: str) -> None:
    problem = one_problem(f"env:\n  DEBUG: {value}\n")
    assert problem.startswith(f"cfg.yaml:2: env.DEBUG: expected a string, got {got}")
    assert 'quote it: "..."' in problem


# --- health.codes ---------------------------------------------------------------------------


def test_health_code_priority_and_action_have_defaults() -> None:
    table = parse("health:\n  codes:\n    7: {name: disk_full}\n", PATH).health
    assert table[7] == HealthCode(7, "disk_full", "err", "restart")


def test_health_codes_may_override_code_1_and_use_255() -> None:
    table = parse("health:\n  codes:\n"
                  "    1: {name: failing, priority: crit, action: log}\n"
                  "    255: {name: fatal, priority: emerg}\n", PATH).health
    assert table[1] == HealthCode(1, "failing", "crit", "log")
    assert table[255] == HealthCode(255, "fatal", "emerg", "restart")
    assert list(table) == [0, 1, 255]


@pytest.mark.parametrize("priority", ["emerg", "alert", "crit", "err", "warning", "notice",
                                      "info", "debug"])
def test_every_syslog_priority_name_is_accepted(priority: str) -> None:
    table = parse(f"health:\n  codes:\n    2: {{name: x, priority: {priority}}}\n", PATH).health
    assert table[2].priority == priority


@pytest.mark.parametrize("code", ["0", "256", "-1", "'2'", "2.5", "abc"])
def test_health_codes_outside_1_to_255_are_refused(code: str) -> None:
    problem = one_problem(f"health:\n  codes:\n    {code}: {{name: x}}\n")
    assert problem.startswith("cfg.yaml:3: health.codes.")
    assert "a health code must be an integer from 1 to 255 (0 is always healthy)" in problem


@pytest.mark.parametrize(
    "spec, key, fragment",
    [
        ("{name: Backlog}", "name", "expected a lowercase name like memory_limit, got 'Backlog'"),
        ("{name: 'two words'}", "name", "got 'two words'"),
        ("{name: 1st}", "name", "got '1st'"),
        ("{name: 3}", "name", "got 3"),
        ("{name: x, priority: loud}", "priority", "expected one of emerg, alert, crit, err, "
                                                  "warning, notice, info, debug, got 'loud'"),
        ("{name: x, priority: ERR}", "priority", "got 'ERR'"),
        ("{name: x, priority: 3}", "priority", "got 3"),
        ("{name: x, action: kill}", "action", "expected one of log, restart, got 'kill'"),
        ("{name: x, action: null}", "action", "got nothing"),
    ],
)
def test_bad_health_code_name_priority_or_action(spec: str, key: str, fragment: str) -> None:
    problem = one_problem(f"health:\n  codes:\n    2: {spec}\n")
    assert problem.startswith(f"cfg.yaml:3: health.codes.2.{key}: "), problem
    assert fragment in problem


def test_a_health_code_without_a_name_is_refused() -> None:
    problem = one_problem("health:\n  codes:\n    2: {priority: err}\n")
    assert "health.codes.2.name: expected a lowercase name like memory_limit, got nothing" \
        in problem


def test_a_missing_health_code_name_is_reported_at_the_line_of_the_code() -> None:
    assert one_problem("health:\n  codes:\n    2: {priority: err}\n").startswith(
        "cfg.yaml:3: health.codes.2.name: ")


def test_a_health_code_spec_must_be_a_mapping() -> None:
    found = problems("health:\n  codes:\n    2: backlog\n")
    assert found[0] == "cfg.yaml:3: health.codes.2: expected a mapping, got 'backlog'"


def test_health_code_problems_name_the_line_of_the_value() -> None:
    problem = one_problem("health:\n  codes:\n    2:\n      name: backlog\n"
                          "      priority: loud\n")
    assert problem.startswith("cfg.yaml:5: health.codes.2.priority: ")


def test_every_problem_of_one_health_code_is_reported() -> None:
    found = problems("health:\n  codes:\n    2: {name: Bad, priority: loud, action: kill}\n")
    assert [problem.split(": ")[1] for problem in found] == [
        "health.codes.2.name", "health.codes.2.priority", "health.codes.2.action"]
