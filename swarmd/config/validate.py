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

from swarmd.config.durations import format_duration, parse_duration
from swarmd.config.health import ACTIONS, PRIORITIES, HealthCode, HealthTable
from swarmd.config.schema import RESERVED_ENV, Config, ConfigError, RestartPolicy, Timeouts

MAX_NODES = 4096
_APP = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Source:
    """Where each key path stands in the YAML text, and what was written there."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}  # path (or "key:" + path) -> line
        self.texts: dict[str, str] = {}  # path -> scalar text as written
        self.duplicates: list[str] = []


def _walk(node: yaml.Node | None, source: _Source, prefix: str = "") -> _Source:
    """Index every key path ("timeouts.report", "health.codes.3.name") of a composed document.

    Paths use the parsed key (`0x10:` is 16, as the checks see it), not its spelling."""
    if isinstance(node, yaml.MappingNode):
        constructor = yaml.SafeLoader("")
        for key_node, value_node in node.value:
            try:
                key = (constructor.construct_object(key_node)
                       if isinstance(key_node, yaml.ScalarNode) else key_node.value)
            except yaml.YAMLError:
                key = key_node.value
            path = f"{prefix}{key}"
            if "key:" + path in source.lines:
                source.duplicates.append(path)
            source.lines[path] = value_node.start_mark.line + 1
            source.lines["key:" + path] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode):
                source.texts[path] = value_node.value
            _walk(value_node, source, path + ".")
    return source


class _Checker:
    """Collects problems while reading; each is one line with key path and YAML line."""

    def __init__(self, path: str, source: _Source | None = None) -> None:
        self.path = path
        self.source = source or _Source()
        self.problems: list[str] = []

    def line_of(self, key: str, at_key: bool = False) -> int | None:
        """The key's line, else its nearest written parent's (a missing key has none)."""
        parts = key.split(".")
        while parts:
            path = ".".join(parts)
            line = self.source.lines.get(("key:" if at_key else "") + path)
            if line is None:
                line = self.source.lines.get("key:" + path)
            if line is not None:
                return line
            parts.pop()
        return None

    def problem(self, key: str, message: str, *, at_key: bool = False) -> None:
        line = self.line_of(key, at_key)
        where = f"{self.path}:{line}" if line else self.path
        self.problems.append(f"{where}: {key}: {message}")

    def unknown_keys(self, data: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in data:
            if key not in known:
                self.problem(f"{prefix}{key}", f"unknown key (known keys: {', '.join(known)})",
                             at_key=True)

    def mapping(self, data: Any, key: str) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problem(key, f"expected a mapping, got {_describe(data)}")
            return {}
        return data

    def duration(self, data: Mapping[str, Any], key: str, prefix: str, default: float,
                 *, allow_zero: bool = False) -> float:
        if key not in data:
            return default
        try:
            seconds = parse_duration(data[key])
        except ValueError as exc:
            self.problem(prefix + key, f"{exc}, got {_describe(data[key])}")
            return default
        if seconds < 0 or (seconds == 0 and not allow_zero):
            self.problem(prefix + key, f"must be {'>= 0' if allow_zero else '> 0'}, "
                                       f"got {_describe(data[key])}")
            return default
        return seconds

    def integer(self, data: Mapping[str, Any], key: str, prefix: str, default: int,
                low: int, high: int | None = None) -> int:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(prefix + key, f"expected an integer, got {_describe(value)}")
            return default
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            self.problem(prefix + key, f"must be {bound}, got {value}")
            return default
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool | int | float | str):
        return repr(value)
    return f"a {type(value).__name__}"


def _check_permissions(path: str, checker: _Checker) -> None:
    """The config names code that runs as the service: nobody else may be able to change it."""
    info = os.stat(path)
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
    """Read and validate a config file; raise ConfigError listing every problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc}"]) from None
    checker = _Checker(path)
    _check_permissions(path, checker)
    config = parse(text, path, checker)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


def parse(text: str, path: str = "<config>", checker: _Checker | None = None) -> Config:
    """Validate YAML text; raise ConfigError listing every problem."""
    checker = checker or _Checker(path)
    try:
        data = yaml.safe_load(text)
        checker.source = _walk(yaml.compose(text, Loader=yaml.SafeLoader), _Source())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([*checker.problems, f"{where}: invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([*checker.problems, f"{path}: the top level must be a mapping of "
                                              f"keys, got {_describe(data)}"])
    for key in checker.source.duplicates:
        checker.problem(key, "given twice; only the last would count: keep one", at_key=True)
    config = _build(data, checker, path)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


_TOP_KEYS = ("nodes", "app", "command", "preload", "node_id_offset", "env", "timeouts",
             "restart", "reload", "health")


def _build(data: Mapping[str, Any], c: _Checker, path: str) -> Config:
    c.unknown_keys(data, _TOP_KEYS, "")
    defaults = Config()
    nodes = defaults.nodes
    if data.get("nodes") == "auto":
        nodes = len(os.sched_getaffinity(0)) or 1
    elif "nodes" in data:
        nodes = c.integer(data, "nodes", "", defaults.nodes, 1, MAX_NODES)
    app = defaults.app
    if "app" in data:
        if not isinstance(data["app"], str) or not _APP.match(data["app"]):
            c.problem("app", f'expected "module:function" like "myapp.worker:run", '
                             f"got {_describe(data['app'])}")
        else:
            app = data["app"]
    command = _command(data, c)
    if command is not None and "app" in data:
        c.problem("command", "give either app or command, not both")
    preload = defaults.preload
    if "preload" in data:
        if not isinstance(data["preload"], bool):
            c.problem("preload", f"expected true or false, got {_describe(data['preload'])}")
        else:
            preload = data["preload"]
    offset = c.integer(data, "node_id_offset", "", 0, 0, 1_000_000)
    env = _env(c.mapping(data.get("env"), "env"), c)
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
        c.problem("reload", f"expected rolling or quiet, got {_describe(reload_mode)}")
        reload_mode = defaults.reload
    health = _health(c.mapping(data.get("health"), "health"), c)
    return Config(nodes=nodes, app=app, command=command, preload=preload, node_id_offset=offset,
                  env=env, timeouts=timeouts, restart=restart, reload=reload_mode,
                  health=health, path=path)


def _command(data: Mapping[str, Any], c: _Checker) -> tuple[str, ...] | None:
    if "command" not in data:
        return None
    value = data["command"]
    if isinstance(value, str):
        c.problem("command", f'expected a list like ["/usr/bin/worker", "--queue", "q1"] '
                             f"(no shell is used), got {_describe(value)}")
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(arg, str | int | float) and not isinstance(arg, bool)
                       for arg in value)):
        c.problem("command", f"expected a non-empty list of strings, got {_describe(value)}")
        return None
    import shutil  # here, not at the top: only command nodes need it, and start-up is measured

    argv = tuple(str(arg) for arg in value)
    program = argv[0]
    if "/" in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            c.problem("command", f"{program} is not an executable file")
    elif shutil.which(program) is None:
        c.problem("command", f"{program} is not found on PATH; give its absolute path")
    return argv


def _env(data: Mapping[str, Any], c: _Checker) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in data.items():
        key = f"env.{name}"
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            c.problem(key, "not a valid environment variable name", at_key=True)
        elif name in RESERVED_ENV:
            c.problem(key, "is set by swarmd itself and cannot be configured", at_key=True)
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            c.problem(key, f'expected a string, got {_describe(value)}; quote it: "..."')
        else:  # numbers as written: "1.10" stays 1.10, "0123" stays 0123
            env[name] = value if isinstance(value, str) else c.source.texts.get(key, str(value))
    return env


def _health(data: Mapping[str, Any], c: _Checker) -> HealthTable:
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
        if not isinstance(name, str) or not _CODE_NAME.match(name):
            c.problem(key + ".name", f"expected a lowercase name like memory_limit, "
                                     f"got {_describe(name)}")
            ok = False
        priority = spec.get("priority", "err")
        if not isinstance(priority, str) or priority not in PRIORITIES:
            c.problem(key + ".priority", f"expected one of {', '.join(PRIORITIES)}, "
                                         f"got {_describe(priority)}")
            ok = False
        action = spec.get("action", "restart")
        if not isinstance(action, str) or action not in ACTIONS:
            c.problem(key + ".action", f"expected one of {', '.join(ACTIONS)}, "
                                       f"got {_describe(action)}")
            ok = False
        if ok:
            table[code] = HealthCode(code, name, priority, action)
    return HealthTable(table)
