"""The configuration: immutable named tuples (schema), and the YAML validator (validate).

The parser is reached lazily (`swarmd.config.load` imports swarmd.config.validate and yaml on first
use): the supervisor only ever holds a Config made from plain data, and never imports yaml.
"""

from __future__ import annotations

from typing import Any

from swarmd.config.schema import (
    DEFAULT_PATH,
    RESERVED_ENV,
    Config,
    ConfigError,
    RestartPolicy,
    Timeouts,
    from_data,
    to_data,
)

__all__ = ["DEFAULT_PATH", "RESERVED_ENV", "Config", "ConfigError", "RestartPolicy", "Timeouts",
           "from_data", "to_data", "load", "parse"]


def __getattr__(name: str) -> Any:
    """load, parse and the rest of swarmd.config.validate, imported on first use."""
    import importlib

    validate = importlib.import_module("swarmd.config.validate")
    try:
        return getattr(validate, name)
    except AttributeError:
        raise AttributeError(f"module 'swarmd.config' has no attribute {name!r}") from None
