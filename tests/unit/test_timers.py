"""swarmd.loop.timers: the deadline heap of the supervision loop."""

from __future__ import annotations

from collections.abc import Callable

from swarmd.loop.timers import Timers


def recorder() -> tuple[list[str], Callable[[str], Callable[[], None]]]:
    ran: list[str] = []

    def callback(name: str) -> Callable[[], None]:
        return lambda: ran.append(name)

    return ran, callback


def test_an_empty_heap_has_no_deadline() -> None:
    timers = Timers()
    assert timers.next_deadline() is None
    assert timers.run_due(1e9) == 0
    assert len(timers) == 0


def test_timers_run_in_deadline_order() -> None:
    ran, cb = recorder()
    timers = Timers()
    for when in (3.0, 1.0, 2.0):
        timers.call_at(when, cb(f"t{when:g}"))
    assert timers.next_deadline() == 1.0
    assert timers.run_due(10.0) == 3
    assert ran == ["t1", "t2", "t3"]


def test_timers_with_the_same_deadline_run_in_the_order_they_were_set() -> None:
    ran, cb = recorder()
    timers = Timers()
    for name in "abcde":
        timers.call_at(5.0, cb(name))
    timers.run_due(5.0)
    assert ran == list("abcde")


def test_run_due_runs_only_what_is_due_including_now() -> None:
    ran, cb = recorder()
    timers = Timers()
    timers.call_at(1.0, cb("early"))
    timers.call_at(2.0, cb("now"))
    timers.call_at(2.5, cb("later"))
    assert timers.run_due(2.0) == 2
    assert ran == ["early", "now"]
    assert timers.next_deadline() == 2.5
    assert len(timers) == 1


def test_a_timer_runs_once() -> None:
    ran, cb = recorder()
    timers = Timers()
    timer = timers.call_at(1.0, cb("once"))
    timers.run_due(5.0)
    assert timers.run_due(5.0) == 0
    assert ran == ["once"]
    assert timer.cancelled  # a fired timer counts as done: cancelling it later is harmless
    timer.cancel()


def test_a_cancelled_timer_never_runs() -> None:
    ran, cb = recorder()
    timers = Timers()
    first = timers.call_at(1.0, cb("first"))
    timers.call_at(2.0, cb("second"))
    first.cancel()
    assert len(timers) == 1
    assert timers.next_deadline() == 2.0
    assert timers.run_due(10.0) == 1
    assert ran == ["second"]


def test_cancelling_every_timer_leaves_no_deadline() -> None:
    timers = Timers()
    handles = [timers.call_at(float(i), lambda: None) for i in range(5)]
    for handle in handles:
        handle.cancel()
    assert timers.next_deadline() is None
    assert len(timers) == 0
    assert timers.run_due(100.0) == 0


def test_a_callback_may_cancel_a_timer_due_in_the_same_run() -> None:
    ran, cb = recorder()
    timers = Timers()
    victim = timers.call_at(2.0, cb("victim"))
    timers.call_at(1.0, victim.cancel)
    assert timers.run_due(5.0) == 1
    assert ran == []


def test_a_callback_may_schedule_a_later_timer() -> None:
    ran, cb = recorder()
    timers = Timers()
    timers.call_at(1.0, lambda: timers.call_at(10.0, cb("later")))
    assert timers.run_due(5.0) == 1
    assert ran == []
    assert timers.next_deadline() == 10.0
    assert timers.run_due(10.0) == 1
    assert ran == ["later"]


def test_a_timer_scheduled_by_a_callback_already_due_runs_in_the_same_turn() -> None:
    ran, cb = recorder()
    timers = Timers()
    timers.call_at(1.0, lambda: timers.call_at(2.0, cb("chained")))
    assert timers.run_due(5.0) == 2
    assert ran == ["chained"]


def test_the_handle_remembers_its_deadline() -> None:
    timers = Timers()
    timer = timers.call_at(42.5, lambda: None)
    assert timer.when == 42.5
    assert not timer.cancelled


def test_a_cancelled_timer_lets_go_of_its_callback_at_once() -> None:
    import gc
    import weakref

    class Node:  # stands for what a dead node's timers hold through their closures
        def check(self) -> None:
            pass

    node = Node()
    gone = weakref.ref(node)
    timers = Timers()
    timer = timers.call_at(1e9, node.check)
    del node
    gc.collect()
    assert gone() is not None
    timer.cancel()
    gc.collect()
    assert gone() is None
    assert timers.run_due(2e9) == 0


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    """A crash loop with long timeouts: every restart sets far deadlines and cancels them."""
    ran, cb = recorder()
    timers = Timers()
    timers.call_at(5.0, cb("kept"))
    for i in range(100_000):
        timers.call_at(1e6 + i, cb("far")).cancel()
    assert timers.held() < 600
    assert len(timers) == 1
    assert timers.run_due(1e9) == 1 and ran == ["kept"]
