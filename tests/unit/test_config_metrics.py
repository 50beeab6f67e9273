"""The metrics: section (swarmd.config.metrics.check_metrics), through the shared Checker so
the messages carry key paths and YAML lines like every other key's."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from swarmd.config.checker import Checker
from swarmd.config.document import compose
from swarmd.config.metrics import MetricsConfig, check_metrics
from swarmd.metrics.address import Address
from swarmd.metrics.store import Caps

PATH = "cfg.yaml"


def check(text: str) -> tuple[MetricsConfig, list[str]]:
    checker = Checker(PATH, compose(text)[1])
    data = yaml.safe_load(text) or {}
    return check_metrics(data.get("metrics"), checker), checker.problems


def one_problem(text: str) -> str:
    _, problems = check(text)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("text", ["", "metrics:\n", "metrics: {}\n"])
def test_off_by_default(text: str) -> None:
    config, problems = check(text)
    assert problems == []
    assert config == MetricsConfig()
    assert not config.enabled
    assert config.caps == Caps()


@pytest.mark.parametrize("listen, address", [
    ("127.0.0.1:9105", Address(socket.AF_INET, "127.0.0.1", 9105)),
    ("0.0.0.0:80", Address(socket.AF_INET, "0.0.0.0", 80)),
    ("localhost:9105", Address(socket.AF_INET, "127.0.0.1", 9105)),
    ("'[::1]:9105'", Address(socket.AF_INET6, "::1", 9105)),
    ("'[::]:9105'", Address(socket.AF_INET6, "::", 9105)),
    ("unix:/run/swarmd/metrics.sock", Address(socket.AF_UNIX, "/run/swarmd/metrics.sock")),
])
def test_listen_addresses(listen: str, address: Address) -> None:
    config, problems = check(f"metrics:\n  listen: {listen}\n")
    assert problems == []
    assert config.address == address and config.enabled
    assert config.listen == str(address)  # kept as text, for the supervisor to parse
    assert str(address) == listen.strip("'").replace("localhost", "127.0.0.1")


@pytest.mark.parametrize("listen, message", [
    ("9105", "expected an address like"),
    ("':9105'", "expected HOST:PORT"),
    ("127.0.0.1:-1", "the port must be a number from 0 to 65535, got '-1'"),
    ("127.0.0.1:70000", "from 0 to 65535"),
    ("127.0.0.1:http", "from 0 to 65535"),
    ("example.com:9105", "'example.com' is not an IP address"),
    ("'::1:9105'", "an IPv6 address goes in brackets"),
    ("'[nope]:9105'", "'nope' is not an IPv6 address"),
    ("unix:run/m.sock", "a unix socket needs an absolute path"),
    ("unix:/" + "x" * 120, "at most 107 bytes"),
    ("[1]", "expected an address like"),
])
def test_bad_listen_addresses(listen: str, message: str) -> None:
    problem = one_problem(f"metrics:\n  listen: {listen}\n")
    assert problem.startswith(f"{PATH}:2: metrics.listen: ")
    assert message in problem


def test_textfile(tmp_path: Path) -> None:
    config, problems = check(f"metrics:\n  textfile: {tmp_path}/swarmd.prom\n")
    assert problems == [] and config.textfile == f"{tmp_path}/swarmd.prom" and config.enabled


@pytest.mark.parametrize("value, message", [
    ("relative/swarmd.prom", "expected an absolute path"),
    ("/tmp/swarmd.txt", "reads only *.prom files; name it like /tmp/swarmd.prom"),
    ("/nonexistent-dir/swarmd.prom", "the directory /nonexistent-dir does not exist"),
    ("[1]", "expected a file path like"),
    ("''", "expected a file path like"),
])
def test_bad_textfiles(value: str, message: str) -> None:
    problem = one_problem(f"metrics:\n  textfile: {value}\n")
    assert problem.startswith(f"{PATH}:2: metrics.textfile: ") and message in problem


def test_caps() -> None:
    config, problems = check("metrics:\n  max_series_per_node: 10\n  max_series: 100\n")
    assert problems == [] and config.caps == Caps(series_per_node=10, series=100)
    assert one_problem("metrics:\n  max_series_per_node: 0\n") == \
        f"{PATH}:2: metrics.max_series_per_node: must be from 1 to 10000000, got 0"
    assert one_problem("metrics:\n  max_series: many\n") == \
        f"{PATH}:2: metrics.max_series: expected an integer, got 'many'"
    assert one_problem("metrics:\n  max_series_per_node: 100\n  max_series: 10\n") == \
        (f"{PATH}:2: metrics.max_series_per_node: max_series_per_node (100) is above "
         f"max_series (10); one node could never reach its cap")


def test_unknown_keys_and_a_wrong_section() -> None:
    assert one_problem("metrics:\n  port: 9105\n") == \
        (f"{PATH}:2: metrics.port: unknown key (known keys: listen, textfile, "
         f"max_series_per_node, max_series)")
    assert one_problem("metrics: 9105\n") == \
        f"{PATH}:1: metrics: expected a mapping, got 9105"


def test_every_problem_is_reported_at_once() -> None:
    _, problems = check("metrics:\n  listen: nope\n  textfile: x.prom\n  max_series: 0\n")
    assert [p.split(": ")[1] for p in problems] == ["metrics.listen", "metrics.textfile",
                                                     "metrics.max_series"]
