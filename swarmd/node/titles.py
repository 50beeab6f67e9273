"""Process titles, so `ps` and `systemctl status` tell the supervisor and each node apart:

    swarmd: supervisor /etc/swarmd.yaml
    swarmd: node 3 (gen 2) myapp.worker:run

setproctitle (PyPI) rewrites the argv area that /proc/PID/cmdline shows, and the 15-character
comm name `top` shows. Without it installed, titles are skipped: nothing else depends on them.
A command node keeps the program's own argv: after the exec nothing of ours is left to set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_set: Callable[[str], None] | None = None
_loaded = False


def supervisor_title(config_path: str) -> str:
    return f"swarmd: supervisor {config_path}"


def node_title(node_id: int, generation: int, app: Any) -> str:
    """`app` is what the config names ("module:function"), or the resolved function."""
    if not isinstance(app, str):
        module = getattr(app, "__module__", None) or "?"
        name = getattr(app, "__qualname__", None) or getattr(app, "__name__", "?")
        app = f"{module}:{name}"
    return f"swarmd: node {node_id} (gen {generation}) {app}"


def load() -> bool:
    """Import and set up setproctitle in a process that forks nodes, once, before its first
    fork: no node imports it, and its setup finds argv by walking back from environ[0], which
    a node's `env` may have replaced by then (the title is then silently not shown).
    Returns whether titles can be set."""
    global _set, _loaded
    if not _loaded:
        _loaded = True
        try:
            from setproctitle import getproctitle, setproctitle
        except ImportError:
            _set = None
        else:
            getproctitle()  # its one-time setup, here and not in a node
            _set = setproctitle
    return _set is not None


def set_title(title: str) -> bool:
    """Set this process's title; False when setproctitle is not there or failed."""
    if not load():
        return False
    assert _set is not None
    try:
        _set(title)
    except Exception:  # a title is cosmetic: never a reason for a node to fail
        return False
    return True
