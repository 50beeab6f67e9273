"""swarmd's own journal sender (swarmd/systemd/native.py) against a real journald: plain and
length-prefixed fields, an entry too large for a datagram (a sealed memfd), and a burst sent
without waiting that arrives whole and in order."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.system.container import Container, wait_for

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]

SENDER = textwrap.dedent("""\
    import json, sys
    sys.path.insert(0, {repo!r})
    from swarmd.loop.poller import Poller
    from swarmd.systemd.native import JournalSender, encode_entry

    tag = {tag!r}
    poller = Poller()
    sender = JournalSender(note=lambda n: encode_entry(
        [("MESSAGE", f"{{n}} dropped"), ("SWARMD_TEST", tag)]))
    sender.attach(poller)
    def entry(message, **fields):
        return encode_entry([("MESSAGE", message), ("SWARMD_TEST", tag), *fields.items()])
    sender.put(entry("plain", PRIORITY=5))
    sender.put(entry("two\\nlines and a NUL\\0 here", PRIORITY=4))
    sender.put(entry("big " + "z" * (1 << 20), PRIORITY=6), important=True)
    waited = 0
    for i in range({burst}):
        sender.put(entry(f"burst {{i}}"))
        waited += sender.pending() > 0
    while sender.pending():
        poller.poll(5)
    print(json.dumps({{"dropped": sender.dropped_total, "waited": waited}}))
    """)


def test_entries_reach_journald_whole_and_in_order(container: Container,
                                                   venv_python: str) -> None:
    tag = uuid.uuid4().hex
    burst = 3000
    script = SENDER.format(repo=str(REPO), tag=tag, burst=burst)
    result = json.loads(container.run(venv_python, "-c", script, timeout=120).stdout)

    def arrived() -> list[dict[str, object]] | None:
        entries = container.journal(f"SWARMD_TEST={tag}")
        done = any(str(e.get("MESSAGE")) == f"burst {burst - 1}" for e in entries)
        return entries if done else None

    entries = wait_for(arrived, 30, "the burst's last entry in the journal")
    messages = [str(e["MESSAGE"]) for e in entries]
    assert messages[0] == "plain" and entries[0]["PRIORITY"] == "5"
    assert messages[1] == "two\nlines and a NUL\0 here" and entries[1]["PRIORITY"] == "4"
    assert messages[2] == "big " + "z" * (1 << 20)  # through the memfd
    # ~200 KB of burst fit the sender's 1 MiB queue: whatever journald's pace, nothing is lost
    assert result["dropped"] == 0
    assert messages[3:] == [f"burst {i}" for i in range(burst)]
    print(f"burst of {burst}: {result['waited']} puts found journald's queue full")
