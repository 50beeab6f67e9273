"""Node output limits: the `output:` config section and the per-node token buckets."""

from __future__ import annotations

import pytest

from swarmd.config import ConfigError, parse
from swarmd.config.output import OutputLimit
from swarmd.systemd.events import KINDS, NodeRef
from swarmd.systemd.ratelimit import OutputLimiter, output_dropped_event

PATH = "cfg.yaml"


def one_problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH)
    [problem] = caught.value.problems
    return problem


# --- config --------------------------------------------------------------------------------


def test_the_default_limit() -> None:
    assert parse("", PATH).output == OutputLimit(rate=200.0, burst=2000)


@pytest.mark.parametrize("written, per_second", [
    ("500", 500.0), ("0.5", 0.5), ('"300/s"', 300.0), ('"6000/m"', 100.0), ('"7200/h"', 2.0),
    ('" 10 / s "', 10.0), ("unlimited", None)])
def test_rates_as_numbers_per_second_minute_or_hour(written: str, per_second: float | None
                                                    ) -> None:
    assert parse(f"output:\n  rate: {written}\n", PATH).output.rate == per_second


def test_burst_is_a_positive_integer() -> None:
    assert parse("output: {burst: 50}\n", PATH).output.burst == 50
    assert one_problem("output: {burst: 0}\n") == (
        "cfg.yaml:1: output.burst: must be from 1 to 10000000, got 0")


@pytest.mark.parametrize("written", ["0", "-1", '"0/s"', "2000000"])
def test_a_rate_out_of_range_is_refused(written: str) -> None:
    assert one_problem(f"output:\n  rate: {written}\n").startswith(
        "cfg.yaml:2: output.rate: must be above 0 and at most 1000000 lines per second")


@pytest.mark.parametrize("written", ["fast", "true", '"10/d"', ".nan", ".inf", "[1]"])
def test_a_rate_that_is_not_one_is_refused(written: str) -> None:
    assert one_problem(f"output:\n  rate: {written}\n").startswith(
        'cfg.yaml:2: output.rate: expected lines per second like 200, "200/s", "5000/m" or '
        '"unlimited", got ')


def test_unknown_output_keys_are_refused() -> None:
    assert one_problem("output: {lines: 3}\n") == (
        "cfg.yaml:1: output.lines: unknown key (known keys: rate, burst)")


# --- the limiter ---------------------------------------------------------------------------


def test_a_burst_passes_then_the_rate() -> None:
    limiter = OutputLimiter(OutputLimit(rate=100.0, burst=50))
    assert limiter.take(3, 30, now=10.0) == 30
    assert limiter.take(3, 30, now=10.0) == 20  # the burst is spent
    assert limiter.dropped(3) == 10
    assert limiter.take(3, 30, now=10.1) == 10  # 0.1 s at 100/s
    assert limiter.take(3, 1000, now=20.0) == 50  # ten seconds refill at most the burst
    assert limiter.dropped(3) == 10 + 20 + 950


def test_each_node_has_its_own_bucket() -> None:
    limiter = OutputLimiter(OutputLimit(rate=1.0, burst=5))
    assert limiter.take(1, 100, now=0.0) == 5
    assert limiter.take(2, 3, now=0.0) == 3  # node 1's flood costs node 2 nothing
    assert limiter.dropped(2) == 0


def test_unlimited_passes_everything_and_counts_nothing() -> None:
    limiter = OutputLimiter(OutputLimit(rate=None))
    assert limiter.take(1, 10**9, now=0.0) == 10**9
    assert limiter.report(1, now=100.0) == (0, 0.0)


def test_a_clock_that_goes_back_refills_nothing() -> None:
    limiter = OutputLimiter(OutputLimit(rate=100.0, burst=10))
    assert limiter.take(1, 10, now=50.0) == 10
    assert limiter.take(1, 10, now=40.0) == 0


def test_drops_are_reported_at_most_once_per_interval_per_node() -> None:
    limiter = OutputLimiter(OutputLimit(rate=10.0, burst=10), every=10.0)
    limiter.take(1, 110, now=100.0)
    assert limiter.report_at(1) <= 100.0  # the first report may be made at once
    assert limiter.report(1, now=100.0) == (100, 0.0)
    limiter.take(1, 200, now=102.0)  # 2 s at 10/s: 20 tokens, capped at the burst: 10
    assert limiter.report(1, now=103.0) == (0, 0.0)  # too soon after the last one
    assert limiter.report_at(1) == 110.0  # where the caller arms its timer
    assert limiter.report(1, now=110.0) == (190, 8.0)
    assert limiter.report(1, now=125.0) == (0, 0.0)  # nothing dropped since


def test_an_exiting_node_reports_its_drops_at_once() -> None:
    limiter = OutputLimiter(OutputLimit(rate=1.0, burst=1), every=10.0)
    limiter.take(4, 5, now=0.0)
    assert limiter.report(4, now=0.0) == (4, 0.0)
    limiter.take(4, 3, now=1.0)
    assert limiter.report(4, now=2.0, force=True) == (2, 1.0)


def test_forget_and_configure() -> None:
    limiter = OutputLimiter(OutputLimit(rate=1.0, burst=1))
    limiter.take(4, 5, now=0.0)
    limiter.forget(4)
    assert limiter.dropped(4) == 0
    limiter.configure(OutputLimit(rate=None))
    assert limiter.take(4, 5, now=0.0) == 5


def test_the_dropped_entry_names_the_node_the_count_and_the_limit() -> None:
    event = output_dropped_event(NodeRef(3, 812, 2), 1234, 8.04, OutputLimit(200.0, 2000))
    assert event.kind == "node.output_dropped" and event.kind in KINDS
    assert event.message == ("node 3 wrote faster than its output limit (output.rate 200/s, "
                             "output.burst 2000): 1234 line(s) of its output dropped over 8.0s")
    assert event.fields == {"SWARMD_DROPPED": 1234}
    assert event.level == 4
