"""STATUS= goes out at once, then at most once per STATUS_HOLD with the latest text (a real
Supervisor loop turn, a recording notifier, no nodes)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from swarmd.config import Config
from swarmd.supervisor.core import STATUS_HOLD, Supervisor
from swarmd.systemd.events import StderrSink


class RecordingNotifier:
    watchdog_interval = None

    def __init__(self) -> None:
        self.statuses: list[tuple[float, str]] = []

    def status(self, text: str) -> bool:
        if self.statuses and self.statuses[-1][1] == text:
            return False
        self.statuses.append((time.monotonic(), text))
        return True

    def fileno(self) -> None:
        return None


@pytest.fixture
def loop() -> Iterator[tuple[Supervisor, RecordingNotifier, int]]:
    notifier = RecordingNotifier()
    sup = Supervisor(Config(), sink=StderrSink(open(os.devnull, "w")),  # noqa: SIM115
                     notifier=notifier)  # type: ignore[arg-type]
    sup.fleet.dirty = False  # the initial status is not what is tested here
    r, w = os.pipe()

    def change() -> None:
        os.read(r, 64)
        sup.fleet.restarts += 1
        sup.fleet.mark_dirty()

    sup.poller.register(r, change)
    yield sup, notifier, w
    sup.poller.close()
    os.close(r)
    os.close(w)


def texts(notifier: RecordingNotifier) -> list[str]:
    return [text for _, text in notifier.statuses]


def test_a_lone_change_goes_out_in_its_own_turn(
        loop: tuple[Supervisor, RecordingNotifier, int]) -> None:
    sup, notifier, w = loop
    os.write(w, b"x")
    sup._turn()
    assert texts(notifier) == ["0/0 healthy, 1 restart, starting"]


def test_changes_right_after_a_message_are_sent_together_when_the_hold_is_over(
        loop: tuple[Supervisor, RecordingNotifier, int]) -> None:
    sup, notifier, w = loop
    for _ in range(4):
        os.write(w, b"x")
        sup._turn()  # the first goes out, the next three are held
    assert texts(notifier) == ["0/0 healthy, 1 restart, starting"]
    sup._turn()  # nothing ready: the loop sleeps until the hold is over
    assert texts(notifier) == ["0/0 healthy, 1 restart, starting",
                               "0/0 healthy, 4 restarts, starting"]
    (first, _), (second, _) = notifier.statuses
    assert second - first >= STATUS_HOLD
