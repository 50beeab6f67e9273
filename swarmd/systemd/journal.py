"""The journal, through systemd-python: one structured entry per call, never raising; a silent
no-op where the journal or the library is not there."""

from __future__ import annotations

import os
from typing import Any

_journal: Any = None  # systemd.journal, imported on first use (a foreground run never needs it)
_journal_tried = False


def _journal_module() -> Any:
    """systemd-python's journal module, or None where it is not installed (Linux-only)."""
    global _journal, _journal_tried
    if not _journal_tried:
        _journal_tried = True
        try:
            from systemd import journal
        except ImportError:  # pragma: no cover - only on machines without libsystemd
            journal = None
        _journal = journal
    return _journal


def stderr_is_journal(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when our stderr is the stream systemd connected to the journal (JOURNAL_STREAM)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value or _journal_module() is None:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        info = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (dev, ino)


def journal_send(message: str, **fields: Any) -> None:
    """One structured journal entry; never raises (a full journal must not stop a node)."""
    journal = _journal or _journal_module()
    if journal is None:
        return
    # sendv, not send: send() would stamp CODE_FILE/CODE_LINE of this very function on
    # every entry; the fields given (a node's log record carries its own) are the truth.
    entry = [f"MESSAGE={message}"]
    entry.extend(f"{key}={value}" for key, value in fields.items() if value is not None)
    try:
        journal.sendv(*entry)
    except (OSError, ValueError):
        pass
