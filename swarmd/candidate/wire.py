"""Messages between the supervisor and a loader or candidate process: one JSON object per
line, over a pipe (a throwaway loader) or a socket (a deploy's candidate: channel.py)."""

from __future__ import annotations

import enum
import json
import os
from typing import Any

MAX_LINE = 4 << 20  # a config's data is far smaller; anything longer is not ours
READ_CHUNK = 65536


class Kind(str, enum.Enum):
    """What a message says."""

    CONFIG = "config"  # loader -> supervisor: the validated config, as data
    LOADED = "loaded"  # loader -> supervisor: the app is imported, ready to fork
    FAILED = "failed"  # loader -> supervisor: this version cannot run (problems)
    SPAWN = "spawn"  # supervisor -> candidate: fork a node (+ its 3 pipes' write ends)
    SPAWNED = "spawned"  # candidate -> supervisor: its pid (a first start's: + 3 read ends)
    SPAWN_FAILED = "spawn_failed"
    GO = "go"  # supervisor -> a first start's loader: fork the fleet (we reap it now)


class Stage(str, enum.Enum):
    """Where a load failed."""

    CONFIG = "config"
    APP = "app"
    SWARMD = "swarmd"


class ChannelClosed(Exception):
    """The other end is gone, or sent what no swarmd sends."""


class ChannelEnded(ChannelClosed):
    """The other end closed it: its process ended (or is ending)."""


def encode(kind: Kind, **fields: Any) -> bytes:
    if "t" in fields:
        raise ValueError("a message's own field cannot be called t (its kind)")
    return json.dumps({"t": kind.value, **fields}).encode() + b"\n"


def read_messages(fd: int, buffer: bytearray) -> tuple[list[dict[str, Any]], bool]:
    """Whole messages from a throwaway loader's pipe (non-blocking fd), and whether it hit
    EOF; `buffer` keeps a partial line between calls."""
    eof = False
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            break
        if not data:
            eof = True
            break
        buffer += data
        if len(buffer) > MAX_LINE:
            raise ChannelClosed(f"a message longer than {MAX_LINE} bytes")
    messages = []
    while (end := buffer.find(b"\n")) >= 0:
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        try:
            message = json.loads(line)
            Kind(message["t"])
        except (ValueError, KeyError, TypeError):
            raise ChannelClosed(f"garbage: {line[:80]!r}") from None
        messages.append(message)
    return messages, eof
