"""The app a node runs: found by "module:function", imported once before the forks (preload)
or by each node itself."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a loader resolving the app needs none of the node's API (nor logging)
    from swarmd.api import Node
    from swarmd.config import Config


class PreloadError(Exception):
    """The app named in the config cannot be imported in the supervisor."""


def load_app(config: Config) -> Callable[[Node], Any] | str | None:
    """What the supervisor hands each fork for `config`: the imported app (preload: the
    import happens once, before any fork, and a broken one is refused here), its name (each
    node imports it itself), or None for a command."""
    if config.command is not None:
        return None
    if not config.preload:
        return config.app
    try:
        return resolve(config.app)  # the same lookup a node does without preload
    except Exception as exc:
        raise PreloadError(f"app: cannot load {config.app!r}: "
                           f"{type(exc).__name__}: {exc}") from exc


def resolve(app: Callable[[Node], Any] | str | None) -> Callable[[Node], Any]:
    if callable(app):
        return app
    if not isinstance(app, str):
        raise TypeError("no app to run")
    module_name, _, attr = app.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target
