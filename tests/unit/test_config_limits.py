"""limits.memory / memory_max / lifetime (swarmd.config.limits) and sizes (swarmd.config.sizes)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from swarmd.config.checker import Checker
from swarmd.config.document import compose
from swarmd.config.limits import Limits, check_limits
from swarmd.config.sizes import approx_size, format_size, parse_size

PATH = "cfg.yaml"
M = 1 << 20


def limits_of(text: str) -> tuple[Limits, list[str]]:
    """check_limits on the `limits` value of a YAML document, with the YAML's line numbers."""
    data = yaml.safe_load(text) or {}
    checker = Checker(PATH, compose(text)[1])
    return check_limits(data.get("limits"), checker), checker.problems


def one_problem(text: str) -> str:
    limits, problems = limits_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, size",
    [
        (0, 0),
        (1048576, M),
        ("1048576", M),
        ("64K", 64 << 10),
        ("64k", 64 << 10),
        ("512M", 512 * M),
        ("512 M", 512 * M),
        ("512Mi", 512 * M),
        ("1G", 1 << 30),
        ("1Gi", 1 << 30),
        ("1.5G", 3 << 29),
        ("1.5K", 1536),
        ("0.1K", 102),  # rounded down to whole bytes
        ("2T", 2 << 40),
        (" 8M ", 8 * M),
    ],
)
def test_parse_size(value: Any, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", [True, -1, "", "M", "12X", "1.5", "-3M", "1e6", 1.5, None,
                                   "5 GB", "512MB", "1KiB", [1]])
def test_parse_size_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a size like 512M"):
        parse_size(value)


def test_parse_size_refuses_decimal_units_saying_why() -> None:
    with pytest.raises(ValueError, match=r"write 512M without the B \(K, M, G are powers of 1024"):
        parse_size("512MB")


@pytest.mark.parametrize(
    "size, text",
    [(0, "0"), (1000, "1000"), (1024, "1K"), (1536, "1536"), (512 * M, "512M"),
     (1536 * M, "1536M"), (1 << 30, "1G"), (3 << 40, "3T"), (M + 1, "1048577")],
)
def test_format_size_is_exact(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize("size", [0, 1, 999, 1023, 1024, 1025, 4096, 10**6, 512 * M, 3 << 29,
                                  (1 << 30) - 1, 7 << 40, 2**63 - 1])
def test_format_size_round_trips_through_parse(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["1K", "1.5K", "512M", "0.5G", "1536", "64Ki"])
def test_parse_then_format_then_parse_is_stable(text: str) -> None:
    size = parse_size(text)
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    "size, text",
    [(0, "0B"), (900, "900B"), (1024, "1.00K"), (12 * M, "12.0M"), (150 * M, "150M"),
     (1_288_490_189, "1.20G"), ((1 << 30) - 1, "1.00G"), (5 << 40, "5.00T")],
)
def test_approx_size_for_people(size: int, text: str) -> None:
    assert approx_size(size) == text


# --- limits ---------------------------------------------------------------------------------


def test_no_limits_section_means_no_limits() -> None:
    assert limits_of("nodes: 2\n") == (Limits(), [])
    assert limits_of("limits:\n") == (Limits(), [])
    assert not Limits().active


def test_all_three_limits() -> None:
    limits, problems = limits_of("limits:\n  memory: 512M\n  memory_max: 1G\n  lifetime: 6h\n")
    assert problems == []
    assert limits == Limits(memory=512 * M, memory_max=1 << 30, lifetime=6 * 3600.0)
    assert limits.active


def test_bytes_and_numbers_of_seconds() -> None:
    limits, problems = limits_of(f"limits: {{memory: {64 * M}, lifetime: 90}}\n")
    assert problems == []
    assert limits == Limits(memory=64 * M, lifetime=90.0)


def test_null_means_off() -> None:
    assert limits_of("limits:\n  memory:\n  lifetime: ~\n") == (Limits(), [])


def test_unknown_key_names_its_path_and_line() -> None:
    assert one_problem("nodes: 1\nlimits:\n  memroy: 1G\n") == (
        "cfg.yaml:3: limits.memroy: unknown key (known keys: memory, memory_max, lifetime)")


def test_not_a_mapping() -> None:
    assert one_problem("limits: 512M\n") == "cfg.yaml:1: limits: expected a mapping, got '512M'"


@pytest.mark.parametrize("key", ["memory", "memory_max"])
def test_a_bad_size(key: str) -> None:
    assert one_problem(f"limits:\n  {key}: lots\n") == (
        f"cfg.yaml:2: limits.{key}: expected a size like 512M, 1G or 1048576 (bytes), "
        f"got 'lots'")


def test_a_decimal_unit_is_refused_with_the_fix() -> None:
    assert one_problem("limits:\n  memory: 512MB\n") == (
        "cfg.yaml:2: limits.memory: expected a size like 512M, 1G or 1048576 (bytes); write "
        "512M without the B (K, M, G are powers of 1024), got '512MB'")


def test_a_forgotten_unit_is_caught() -> None:
    assert one_problem("limits:\n  memory: 512\n") == (
        "cfg.yaml:2: limits.memory: must be at least 1M, got 512 (512 bytes); "
        "did you mean 512M?")


def test_memory_max_below_memory() -> None:
    assert one_problem("limits:\n  memory: 1G\n  memory_max: 512M\n") == (
        "cfg.yaml:3: limits.memory_max: 512M is below limits.memory (1G): the kernel would "
        "kill a node before it could be recycled; raise memory_max or lower memory")


def test_memory_max_equal_to_memory_is_fine() -> None:
    assert limits_of("limits: {memory: 1G, memory_max: 1024M}\n")[1] == []


@pytest.mark.parametrize("value, message", [
    ("soon", "expected a duration like 30s, 500ms or 2m, got 'soon'"),
    ("500ms", "must be at least 1s, got '500ms'; leave it out for no lifetime limit"),
    ("0", "must be at least 1s, got 0; leave it out for no lifetime limit"),
    ("true", "expected a duration like 30s, 500ms or 2m, got True"),
])
def test_a_bad_lifetime(value: str, message: str) -> None:
    assert one_problem(f"limits:\n  lifetime: {value}\n") == (
        f"cfg.yaml:2: limits.lifetime: {message}")


def test_every_problem_is_reported_and_the_good_keys_kept() -> None:
    limits, problems = limits_of("limits:\n  memory: x\n  memory_max: 2G\n  lifetime: y\n")
    assert [p.split(": ")[1] for p in problems] == ["limits.memory", "limits.lifetime"]
    assert limits == Limits(memory_max=2 << 30)


@pytest.mark.parametrize("size", [0, 900, 1024, 12 * 1024 * 1024, 150 << 20, 1_288_490_189])
def test_approx_sizes_read_back_within_their_rounding(size: int) -> None:
    """What a message prints (`memory 612M above limits.memory 512M`) is a valid config
    value, within the 3 significant digits it shows."""
    assert abs(parse_size(approx_size(size)) - size) <= max(size * 0.005, 0)
