"""STATUS= changes are held for STATUS_HOLD and sent as one message (a real Supervisor loop
turn, a recording notifier, no nodes)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from swarmd.config import Config
from swarmd.events import StderrSink
from swarmd.supervisor import STATUS_HOLD, Supervisor


class RecordingNotifier:
    watchdog_interval = None

    def __init__(self) -> None:
        self.statuses: list[tuple[float, str]] = []

    def status(self, text: str) -> None:
        self.statuses.append((time.monotonic(), text))

    def fileno(self) -> None:
        return None


@pytest.fixture
def loop() -> Iterator[tuple[Supervisor, RecordingNotifier, int]]:
    notifier = RecordingNotifier()
    sup = Supervisor(Config(), sink=StderrSink(open(os.devnull, "w")),  # noqa: SIM115
                     notifier=notifier)  # type: ignore[arg-type]
    sup._dirty = False  # the initial status is not what is tested here
    r, w = os.pipe()

    def change() -> None:
        os.read(r, 64)
        sup.restarts += 1
        sup.mark_dirty()

    sup.poller.register(r, change)
    yield sup, notifier, w
    sup.poller.close()
    os.close(r)
    os.close(w)


def test_a_burst_of_changes_is_one_status_message_with_the_latest_text(
        loop: tuple[Supervisor, RecordingNotifier, int]) -> None:
    sup, notifier, w = loop
    first_change = time.monotonic()
    for _ in range(3):
        os.write(w, b"x")
        sup._turn()  # the change is seen, nothing is sent yet
    assert notifier.statuses == []
    sup._turn()  # nothing ready: the loop sleeps until the held status is due
    assert [text for _, text in notifier.statuses] == ["0/0 healthy, 3 restarts, starting"]
    assert notifier.statuses[0][0] - first_change >= STATUS_HOLD


def test_a_change_after_the_message_gets_its_own(
        loop: tuple[Supervisor, RecordingNotifier, int]) -> None:
    sup, notifier, w = loop
    for _ in range(2):
        os.write(w, b"x")
        sup._turn()
        sup._turn()
    assert [text for _, text in notifier.statuses] == ["0/0 healthy, 1 restart, starting",
                                                        "0/0 healthy, 2 restarts, starting"]
