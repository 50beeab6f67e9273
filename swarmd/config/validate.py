"""YAML text -> a validated Config: every check lives here.

`swarmd check`, the first start and a deploy all refuse the same files with the same messages
(one line per problem, naming the key path and its YAML line). It runs in the loader process
(swarmd/candidate/), never in the supervisor, which gets the result as plain data.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import Any

import yaml

from swarmd.config.checker import Checker, ConfigError, describe, printable
from swarmd.config.document import MAX_BYTES, compose, read_file
from swarmd.config.durations import format_duration
from swarmd.config.durations import parse_duration as parse_duration  # re-exported
from swarmd.config.health import ACTIONS, PRIORITIES, HealthCode, HealthTable
from swarmd.config.limits import check_limits
from swarmd.config.metrics import check_metrics
from swarmd.config.output import parse_output
from swarmd.config.schema import DEFAULT_PATH as DEFAULT_PATH  # re-exported
from swarmd.config.schema import RESERVED_ENV, Config, RestartPolicy, Timeouts

MAX_NODES = 4096
# fullmatch, not match: "$" also matches before a final newline ("A\n" is no variable name)
_APP = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE_NAME = re.compile(r"[a-z][a-z0-9_]*")
MAX_ARG_BYTES = 131071  # execve refuses a longer argument or NAME=value (MAX_ARG_STRLEN - 1)
MAX_EXEC_BYTES = 1 << 20  # command and env together; execve takes ~2 MiB with the inherited env


def _check_permissions(path: str, info: os.stat_result, checker: Checker) -> None:
    """The config names code that runs as the service: nobody else may be able to change it."""
    if info.st_mode & stat.S_IWOTH:
        checker.problem("file", f"writable by every user (mode {stat.filemode(info.st_mode)}); "
                                f"it names code that runs as the service: chmod o-w {path}")
    elif info.st_mode & stat.S_IWGRP and info.st_gid not in (0, os.getgid()):
        checker.problem("file", f"writable by group {info.st_gid} (mode "
                                f"{stat.filemode(info.st_mode)}); it names code that runs as the "
                                f"service: chmod g-w {path}")
    if info.st_uid not in (0, os.getuid()):
        checker.problem("file", f"owned by uid {info.st_uid}, who could change the code the "
                                f"service runs: chown {os.getuid()} {path}")


def load(path: str) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem (and nothing
    else, whatever the file holds: see swarmd/config/document.py for the bounds)."""
    text, info = read_file(path)
    checker = Checker(path)
    _check_permissions(path, info, checker)
    config = parse(text, path, checker)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


def parse(text: str, path: str = "<config>", checker: Checker | None = None) -> Config:
    """Validate YAML text; raise ConfigError listing every problem."""
    checker = checker or Checker(path)
    if len(text) > MAX_BYTES:
        raise ConfigError([*checker.problems, f"{path}: {len(text)} characters, more than the "
                                              f"{MAX_BYTES} a config may have"])
    try:
        data, checker.source = compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError([*checker.problems, _yaml_problem(exc, text, path)]) from None
    except UnicodeEncodeError as exc:
        raise ConfigError([*checker.problems, f"{path}: not Unicode text: {exc.reason} at "
                                              f"character {exc.start}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([*checker.problems, f"{path}: the top level must be a mapping of "
                                              f"keys, got {describe(data)}"])
    for key in checker.source.duplicates:
        checker.problem(key, "given twice; only the last would count: keep one", at_key=True)
    config = _build(data, checker, path)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


def _yaml_problem(exc: yaml.YAMLError, text: str, path: str) -> str:
    """One line: where (the line of the problem) and what, in PyYAML's words."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None)
    if isinstance(exc, yaml.reader.ReaderError):  # pure PyYAML: a character YAML refuses
        line = text.count("\n", 0, exc.position) + 1
        problem = (f"unacceptable character #x{exc.character:04x}: {exc.reason}"
                   if isinstance(exc.character, int) else exc.reason)
    where = f"{path}:{line}" if line else path
    return printable(f"{where}: invalid YAML: {' '.join(str(problem or exc).split())}")


_TOP_KEYS = ("nodes", "app", "command", "preload", "node_id_offset", "env", "timeouts",
             "restart", "reload", "health", "output", "limits", "metrics")


def _build(data: Mapping[str, Any], c: Checker, path: str) -> Config:
    c.unknown_keys(data, _TOP_KEYS, "")
    defaults = Config()
    nodes = defaults.nodes
    if data.get("nodes") == "auto":
        nodes = len(os.sched_getaffinity(0)) or 1
    elif "nodes" in data:
        nodes = c.integer(data, "nodes", "", defaults.nodes, 1, MAX_NODES)
    app = defaults.app
    if "app" in data:
        if not isinstance(data["app"], str) or not _APP.fullmatch(data["app"]):
            c.problem("app", f'expected "module:function" like "myapp.worker:run", '
                             f"got {describe(data['app'])}")
        else:
            app = data["app"]
    command = _command(data, c)
    if command is not None and "app" in data:
        c.problem("command", "give either app or command, not both")
    preload = defaults.preload
    if "preload" in data:
        if not isinstance(data["preload"], bool):
            c.problem("preload", f"expected true or false, got {describe(data['preload'])}")
        else:
            preload = data["preload"]
    offset = c.integer(data, "node_id_offset", "", 0, 0, 1_000_000)
    env = _env(c.mapping(data.get("env"), "env"), c)
    _exec_size(command, env, c)
    t = c.mapping(data.get("timeouts"), "timeouts")
    c.unknown_keys(t, ("boot", "report", "shutdown", "drain"), "timeouts.")
    d = Timeouts()
    timeouts = Timeouts(
        boot=c.duration(t, "boot", "timeouts.", d.boot),
        report=c.duration(t, "report", "timeouts.", d.report),
        shutdown=c.duration(t, "shutdown", "timeouts.", d.shutdown),
        drain=c.duration(t, "drain", "timeouts.", d.drain),
    )
    r = c.mapping(data.get("restart"), "restart")
    c.unknown_keys(r, ("delay", "max_delay", "reset_after", "give_up_after"), "restart.")
    rd = RestartPolicy()
    restart = RestartPolicy(
        delay=c.duration(r, "delay", "restart.", rd.delay, allow_zero=True),
        max_delay=c.duration(r, "max_delay", "restart.", rd.max_delay, allow_zero=True),
        reset_after=c.duration(r, "reset_after", "restart.", rd.reset_after),
        give_up_after=c.integer(r, "give_up_after", "restart.", rd.give_up_after, 0),
    )
    if restart.max_delay < restart.delay:
        if "max_delay" in r:
            c.problem("restart.max_delay", f"must be >= restart.delay "
                                           f"({format_duration(restart.delay)})")
        else:
            c.problem("restart.delay", f"is above restart.max_delay "
                                       f"({format_duration(restart.max_delay)}, the default); "
                                       f"set max_delay too")
    reload_mode = data.get("reload", defaults.reload)
    if reload_mode not in ("rolling", "quiet"):
        c.problem("reload", f"expected rolling or quiet, got {describe(reload_mode)}")
        reload_mode = defaults.reload
    health = _health(c.mapping(data.get("health"), "health"), c)
    output = parse_output(data.get("output"), c)
    return Config(nodes=nodes, app=app, command=command, preload=preload, node_id_offset=offset,
                  env=env, timeouts=timeouts, restart=restart, reload=reload_mode,
                  health=health, output=output, limits=check_limits(data.get("limits"), c),
                  metrics=check_metrics(data.get("metrics"), c), path=path)


def _command(data: Mapping[str, Any], c: Checker) -> tuple[str, ...] | None:
    if "command" not in data:
        return None
    value = data["command"]
    if isinstance(value, str):
        c.problem("command", f'expected a list like ["/usr/bin/worker", "--queue", "q1"] '
                             f"(no shell is used), got {describe(value)}")
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(arg, str | int | float) and not isinstance(arg, bool)
                       for arg in value)):
        c.problem("command", f"expected a non-empty list of strings, got {describe(value)}")
        return None
    import shutil  # here, not at the top: only command nodes need it, and start-up is measured

    argv = tuple(str(arg) for arg in value)
    for number, arg in enumerate(argv):
        unusable = _unusable(arg)
        if unusable:
            c.problem("command", f"{'the program' if number == 0 else f'argument {number}'} "
                                 f"{describe(arg)} {unusable}")
    program = argv[0]
    if not program:
        c.problem("command", "the program is an empty string; give its path")
    elif _unusable(program):
        pass  # said above
    elif "/" in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            c.problem("command", f"{program} is not an executable file")
    elif shutil.which(program) is None:
        c.problem("command", f"{program} is not found on PATH; give its absolute path")
    return argv


def _unusable(text: str, prefix: str = "") -> str | None:
    """Why `text` cannot be an argument or environment variable of a process, if it cannot:
    checked here, since after `check` passed it would only fail in each node (a crash loop)."""
    if "\0" in text:
        return "holds a NUL byte, which no argument or environment variable can hold"
    try:
        size = len(prefix) + len(os.fsencode(text))
    except UnicodeEncodeError as exc:
        return (f"holds {exc.object[exc.start]!r}, which cannot be encoded for the operating "
                f"system ({exc.reason})")
    if size > MAX_ARG_BYTES:
        return f"is {size} bytes long, more than the {MAX_ARG_BYTES} a process can be given"
    return None


def _env(data: Mapping[str, Any], c: Checker) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in data.items():
        key = f"env.{name}"
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            c.problem(key, "not a valid environment variable name", at_key=True)
        elif name in RESERVED_ENV:
            c.problem(key, "is set by swarmd itself and cannot be configured", at_key=True)
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            c.problem(key, f'expected a string, got {describe(value)}; quote it: "..."')
        else:  # numbers as written: "1.10" stays 1.10, "0123" stays 0123
            text = value if isinstance(value, str) else c.source.texts.get(key, str(value))
            unusable = _unusable(text, f"{name}=")
            if unusable:
                c.problem(key, f"the value {unusable}")
            else:
                env[name] = text
    return env


def _exec_size(command: tuple[str, ...] | None, env: Mapping[str, str], c: Checker) -> None:
    """Aliases can repeat a long value: the total is bounded, not only each string."""
    size = sum(len(os.fsencode(arg)) + 1 for arg in command or ())
    size += sum(len(os.fsencode(f"{name}={value}")) + 1 for name, value in env.items())
    if size > MAX_EXEC_BYTES:
        c.problem("env" if env else "command",
                  f"command and env together are {size} bytes, more than the {MAX_EXEC_BYTES} "
                  f"a node can be given (the kernel's limit includes the inherited environment)")


def _health(data: Mapping[str, Any], c: Checker) -> HealthTable:
    c.unknown_keys(data, ("codes",), "health.")
    codes = c.mapping(data.get("codes"), "health.codes")
    table: dict[int, HealthCode] = {}
    for code, spec in codes.items():
        key = f"health.codes.{code}"
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255:
            c.problem(key, "a health code must be an integer from 1 to 255 "
                           "(0 is always healthy)", at_key=True)
            continue
        spec = c.mapping(spec, key)
        c.unknown_keys(spec, ("name", "priority", "action"), key + ".")
        ok = True
        name = spec.get("name")
        if not isinstance(name, str) or not _CODE_NAME.fullmatch(name):
            c.problem(key + ".name", f"expected a lowercase name like memory_limit, "
                                     f"got {describe(name)}")
            ok = False
        priority = spec.get("priority", "err")
        if not isinstance(priority, str) or priority not in PRIORITIES:
            c.problem(key + ".priority", f"expected one of {', '.join(PRIORITIES)}, "
                                         f"got {describe(priority)}")
            ok = False
        action = spec.get("action", "restart")
        if not isinstance(action, str) or action not in ACTIONS:
            c.problem(key + ".action", f"expected one of {', '.join(ACTIONS)}, "
                                       f"got {describe(action)}")
            ok = False
        if ok:
            table[code] = HealthCode(code, name, priority, action)
    return HealthTable(table)
