"""TextfileWriter: the file is replaced whole by a spawned writer whose end the loop sees on its
pidfd; a writer stuck on its file (a FIFO nobody reads stands in for a hung disk) never holds
the loop and is killed; errors are told once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmd.loop.poller import Poller
from swarmd.loop.timers import Timers
from swarmd.metrics.textfile import TextfileWriter, temporary_path
from tests.waiting import wait_for


class Loop:
    def __init__(self) -> None:
        self.poller = Poller()
        self.timers = Timers()
        self.errors: list[str] = []
        self.body = b"up 1\n"

    def writer(self, path: Path, **options: object) -> TextfileWriter:
        return TextfileWriter(str(path), lambda: self.body, self.poller, self.timers,
                              time.monotonic, on_error=self.errors.append,
                              **options)  # type: ignore[arg-type]

    def turn(self) -> bool:
        self.poller.poll(0.01)
        self.timers.run_due(time.monotonic())
        return True


@pytest.fixture
def loop() -> Iterator[Loop]:
    made = Loop()
    yield made
    made.poller.close()


def test_the_file_is_written_by_a_helper_and_replaced_whole(loop: Loop, tmp_path: Path) -> None:
    path = tmp_path / "swarmd.prom"
    path.write_bytes(b"old\n")
    writer = loop.writer(path, interval=3600)
    writer.start()
    wait_for(lambda: loop.turn() and writer.written == 1, 5, "the first write")
    assert path.read_bytes() == b"up 1\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not os.path.exists(temporary_path(str(path)))
    assert loop.poller.fds() == [] and loop.errors == []
    loop.body = b"up 2\n"
    writer._tick()  # the next interval
    wait_for(lambda: loop.turn() and writer.written == 2, 5, "the second write")
    assert path.read_bytes() == b"up 2\n"
    writer.close(remove=False)
    assert path.exists()


def test_the_next_write_comes_after_the_interval(loop: Loop, tmp_path: Path) -> None:
    writer = loop.writer(tmp_path / "m.prom", interval=0.05)
    writer.start()
    wait_for(lambda: loop.turn() and writer.written >= 3, 5, "three writes")
    writer.close()


def test_an_unwritable_place_is_one_error_until_it_changes(loop: Loop, tmp_path: Path) -> None:
    path = tmp_path / "missing" / "m.prom"
    writer = loop.writer(path, interval=3600)
    writer.start()
    wait_for(lambda: loop.turn() and loop.errors, 5, "the error")
    assert loop.errors == [f"metrics.textfile {path}: cannot write it: No such file or "
                           f"directory; check that the directory exists and the service may "
                           f"write there (ReadWritePaths=)"]
    writer._tick()
    wait_for(lambda: loop.turn() and writer._pid is None, 5, "the second writer's end")
    assert len(loop.errors) == 1  # the same error is not told again
    (tmp_path / "missing").mkdir()
    writer._tick()
    wait_for(lambda: loop.turn() and writer.written == 1, 5, "the write once possible")
    writer.close()


def test_a_stuck_writer_never_holds_the_loop_and_is_killed(loop: Loop, tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    os.mkfifo(temporary_path(str(path)))  # opening it for writing blocks until a reader comes
    writer = loop.writer(path, interval=3600, stuck=0.0)
    writer.start()
    assert writer._pid is not None  # forked; the loop goes on
    loop.turn()
    writer._tick()  # the next interval: still busy, so skipped, and (stuck=0) killed
    assert writer.skipped == 1
    wait_for(lambda: loop.turn() and writer._pid is None, 5, "the killed writer's end")
    assert loop.errors[0].startswith(f"metrics.textfile {path}: the writer has been busy for ")
    assert loop.errors[1] == f"metrics.textfile {path}: the writer was killed by SIGKILL"
    assert not path.exists()


def test_close_removes_the_file_once_a_writer_is_gone(loop: Loop, tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    writer = loop.writer(path, interval=3600)
    writer.start()
    wait_for(lambda: loop.turn() and writer.written == 1, 5, "the first write")
    os.mkfifo(temporary_path(str(path)))
    writer._tick()  # a writer stuck on the FIFO
    assert writer._pid is not None
    writer.close()
    wait_for(lambda: not path.exists() and not os.path.exists(temporary_path(str(path))), 5,
             "the remover to remove both files")
    wait_for(lambda: loop.turn() and loop.poller.fds() == [], 5, "the writer and the remover "
                                                                 "reaped from the loop")


def test_a_failing_render_is_an_error_not_an_exception(loop: Loop, tmp_path: Path) -> None:
    def broken() -> bytes:
        raise RuntimeError("bug")

    writer = TextfileWriter(str(tmp_path / "m.prom"), broken, loop.poller, loop.timers,
                            time.monotonic, on_error=loop.errors.append)
    writer.start()
    assert loop.errors == ["metrics.textfile: rendering the metrics failed: RuntimeError('bug')"]
    writer.close()
