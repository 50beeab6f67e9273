"""Property: whatever the config file holds, `swarmd.config.load` returns a Config or raises
ConfigError whose problems are printable single lines; nothing else escapes (a traceback, a
RecursionError, a ValueError from the YAML constructor, a hang).

The strategies are shared with bench/config_fuzz.py, which measures the worst time per input.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmd.config import Config, ConfigError, load, parse
from tests.fuzz import FUZZ

KNOWN_KEYS = ["nodes", "app", "command", "preload", "node_id_offset", "env", "timeouts",
              "restart", "reload", "health", "codes", "boot", "report", "shutdown", "drain",
              "delay", "max_delay", "reset_after", "give_up_after", "name", "priority", "action",
              "<<", "2", "3", "255", "A"]
# pieces of YAML syntax, so that random text is mostly near-YAML rather than plain words
TOKENS = ["[", "]", "{", "}", ":", ": ", ", ", " ", "  ", "\n", "- ", "? ", "&a ", "&b ", "*a",
          "*b", "!!int ", "!!str ", "!!binary ", "!!timestamp ", "!!python/object ", "!custom ",
          "<<: ", "'", '"', "#", "\t", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n",
          "0x1F", "0o17", "1e999", "-.inf", ".nan", "2001-13-45", "2001-12-14t21:59:43.10-05:00",
          "1:20:30", "\\0", "\\ud800", "\\x85", "\x85", "\u2028", "\ufeff", "\x00", "~", "null",
          "yes", "auto", "swarmd.demo:run", "/bin/true", "30s", "9" * 80, "|\n  ", ">-\n  "]

scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=20) | st.sampled_from(KNOWN_KEYS))
keys = st.sampled_from(KNOWN_KEYS) | st.integers(-5, 300) | st.text(max_size=10)
data = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(keys, inner, max_size=5), max_leaves=25)
configs = st.dictionaries(st.sampled_from(KNOWN_KEYS[:10]), data, max_size=6)


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    """Valid YAML of arbitrary data, in block or flow style (config-shaped or not)."""
    import yaml

    value = draw(configs | data)
    flow = draw(st.sampled_from([None, True, False]))
    return str(yaml.safe_dump(value, default_flow_style=flow, allow_unicode=draw(st.booleans())))


near_yaml = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=60).map("".join)


@st.composite
def mangled_documents(draw: st.DrawFn) -> str:
    """A valid document with near-YAML pasted in at some place."""
    text = draw(yaml_documents())
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(near_yaml) + text[at:]


any_text = yaml_documents() | mangled_documents() | near_yaml | st.text(max_size=200)


def check_outcome(outcome: Config | ConfigError) -> None:
    if isinstance(outcome, ConfigError):
        assert outcome.problems
        for problem in outcome.problems:
            assert isinstance(problem, str) and problem.isprintable(), repr(problem)
            problem.encode("utf-8")  # printable on any UTF-8 terminal
    else:
        assert isinstance(outcome, Config)


def outcome_of(call: object, *args: object) -> Config | ConfigError:
    try:
        return call(*args)  # type: ignore[operator, no-any-return]
    except ConfigError as exc:
        return exc


@pytest.fixture(scope="module")
def config_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "swarmd.yaml"
        path.touch(mode=0o600)
        yield path


@FUZZ
@given(text=any_text)
def test_any_yaml_text_gives_a_config_or_a_config_error(text: str) -> None:
    check_outcome(outcome_of(parse, text, "cfg.yaml"))


@FUZZ
@given(blob=st.binary(max_size=300) | any_text.map(lambda text: text.encode("utf-8",
                                                                             "surrogatepass")))
def test_any_bytes_as_the_file_give_a_config_or_a_config_error(config_file: Path,
                                                               blob: bytes) -> None:
    config_file.write_bytes(blob)
    os.chmod(config_file, 0o600)
    check_outcome(outcome_of(load, str(config_file)))
