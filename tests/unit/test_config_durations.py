"""Durations in the config (timeouts.*, restart.*) and format_duration for messages."""

from __future__ import annotations

import pytest

from swarmd.config import ConfigError, format_duration, parse, parse_duration

PATH = "cfg.yaml"
TIMEOUTS = ("boot", "report", "shutdown", "drain")
DURATION_KEYS = [("timeouts", key) for key in TIMEOUTS] + [
    ("restart", "delay"), ("restart", "max_delay"), ("restart", "reset_after")]


def duration_of(section: str, key: str, value: str) -> float:
    # max_delay must stay >= delay: give the other one room when testing either.
    extra = {("restart", "max_delay"): "  delay: 0\n",
             ("restart", "delay"): "  max_delay: 2h\n"}.get((section, key), "")
    config = parse(f"{section}:\n{extra}  {key}: {value}\n", PATH)
    return getattr(getattr(config, section), key)


def problem_of(section: str, key: str, value: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(f"{section}:\n  {key}: {value}\n", PATH)
    assert len(caught.value.problems) == 1, caught.value.problems
    problem = caught.value.problems[0]
    assert problem.startswith(f"cfg.yaml:2: {section}.{key}: "), problem
    return problem


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("0.25s", 0.25),
        ("1500ms", 1.5),
        ("' 30 s '", 30.0),
        ("5", 5.0),          # a plain YAML number is seconds
        ("0.5", 0.5),
        ("90", 90.0),
        ("1m30s", 90.0),     # what format_duration prints, read back
        ("5min", 300.0),     # systemd's spellings (systemd.time(7))
        ("'1h 30min'", 5400.0),
        ("2sec", 2.0),
        ("250msec", 0.25),
    ],
)
@pytest.mark.parametrize("section, key", DURATION_KEYS)
def test_valid_durations(section: str, key: str, value: str, seconds: float) -> None:
    assert duration_of(section, key, value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("'5'", "expected a duration like 30s, 500ms or 2m, got '5'"),  # a string needs a unit
        ("abc", "got 'abc'"),
        ("true", "got True"),
        ("5x", "got '5x'"),
        ("5S", "got '5S'"),   # units are lower case, as systemd's
        ("'1m 30'", "got '1m 30'"),  # every part needs its unit
        ("-1s", "got '-1s'"),
        (".5s", "got '.5s'"),
        ("[1s]", "got a list"),
        ("null", "got nothing"),
    ],
)
@pytest.mark.parametrize("section, key", DURATION_KEYS)
def test_invalid_durations(section: str, key: str, value: str, fragment: str) -> None:
    problem = problem_of(section, key, value)
    assert "expected a duration like 30s, 500ms or 2m" in problem
    assert problem.endswith(fragment)


@pytest.mark.parametrize("value", ["-1", "-0.5"])
@pytest.mark.parametrize("section, key", DURATION_KEYS)
def test_negative_durations_are_refused(section: str, key: str, value: str) -> None:
    assert "must be >" in problem_of(section, key, value)


@pytest.mark.parametrize("value, shown", [("0", "0"), ("0.0", "0.0"), ("0s", "'0s'"),
                                          ("0ms", "'0ms'")])
@pytest.mark.parametrize("section, key", [("timeouts", key) for key in TIMEOUTS]
                         + [("restart", "reset_after")])
def test_zero_is_refused_where_it_makes_no_sense(section: str, key: str, value: str,
                                                 shown: str) -> None:
    assert problem_of(section, key, value).endswith(f"must be > 0, got {shown}")


@pytest.mark.parametrize("value", ["0", "0s", "0ms"])
def test_restart_delay_may_be_zero_restart_at_once(value: str) -> None:
    assert duration_of("restart", "delay", value) == 0.0


def test_max_delay_may_be_zero_when_delay_is_zero() -> None:
    config = parse("restart:\n  delay: 0\n  max_delay: 0\n", PATH)
    assert (config.restart.delay, config.restart.max_delay) == (0.0, 0.0)


def test_max_delay_below_delay_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("restart:\n  delay: 10s\n  max_delay: 5s\n", PATH)
    assert caught.value.problems == [
        "cfg.yaml:3: restart.max_delay: must be >= restart.delay (10s)"]


def test_a_delay_above_the_default_max_delay_names_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("restart:\n  delay: 2m\n", PATH)
    assert caught.value.problems[0].startswith("cfg.yaml:2: restart.")


@pytest.mark.parametrize("value", [".inf", ".nan", ".NaN", ".Inf"])
@pytest.mark.parametrize("section, key", [("timeouts", "boot"), ("restart", "reset_after")])
def test_non_finite_durations_are_refused(section: str, key: str, value: str) -> None:
    problem_of(section, key, value)


def test_parse_duration_directly() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration(False)


# --- format_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (0.001, "1ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (30, "30s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3599, "59m59s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (7200, "2h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["500ms", "2s", "1.5s", "30s", "2m", "1h"])
def test_format_duration_reads_back_with_parse_duration(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_format_duration_keeps_seconds_above_an_hour() -> None:
    assert format_duration(3690) == "1h1m30s"


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1.5, 59.0, 60.0, 90.0, 3599.0, 3600.0, 3725.0,
                                     86400.0, 90061.0])
def test_every_printed_duration_reads_back(seconds: float) -> None:
    from swarmd.config.durations import format_duration, parse_duration

    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_days_and_micro_seconds() -> None:
    from swarmd.config.durations import parse_duration

    assert parse_duration("1d 2h") == 93600.0
    assert parse_duration("2 days") == 172800.0
    assert parse_duration("1500us") == pytest.approx(0.0015)
