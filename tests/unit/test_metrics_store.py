"""MetricStore: app series per slot, a counter continuing across its slot's restarts, gauges
going with their process, the caps, and the type rules (swarmd.metrics.store)."""

from __future__ import annotations

import pytest

from swarmd.metrics.exposition import render
from swarmd.metrics.snapshot import restore, snapshot
from swarmd.metrics.store import MAX_EVENTS_PER_NODE, Caps, EventKind, MetricStore
from swarmd.metrics.wire import MetricUpdates
from swarmd.node.protocol import HealthParser


def updates(data: bytes) -> MetricUpdates:
    batch = HealthParser().feed(data)
    assert batch.errors == [] and batch.metrics is not None, batch.errors
    return batch.metrics


def text(store: MetricStore) -> str:
    return render(None, store).decode()


def test_a_counter_continues_across_its_slots_restarts() -> None:
    store = MetricStore()
    assert store.apply(3, updates(b"t counter jobs Jobs.\nc jobs 5\n")) == []
    store.node_ended(3)  # killed: its next process starts counting from zero, in deltas
    store.apply(3, updates(b"t counter jobs Jobs.\nc jobs 2\n"))
    assert store.value("jobs_total", 3) == 7.0
    store.apply(3, updates(b"c jobs 1\n"))
    assert store.value("jobs_total", 3) == 8.0


def test_slots_are_apart() -> None:
    store = MetricStore()
    store.apply(1, updates(b"c jobs 1\n"))
    store.apply(2, updates(b"c jobs 10\n"))
    assert (store.value("jobs_total", 1), store.value("jobs_total", 2)) == (1.0, 10.0)
    assert 'jobs_total{node="1"} 1.0\njobs_total{node="2"} 10.0\n' in text(store)


def test_gauges_go_with_their_process() -> None:
    store = MetricStore()
    store.apply(1, updates(b'g depth{q="a"} 4\nc jobs 1\n'))
    assert store.value("depth", 1, 'q="a"') == 4.0
    store.node_ended(1)
    assert store.value("depth", 1, 'q="a"') is None
    assert store.value("jobs_total", 1) == 1.0
    assert "depth" not in text(store)  # a family without series is not shown
    assert store.total_series == 1


def test_a_removed_slot_takes_all_its_series() -> None:
    store = MetricStore()
    store.apply(1, updates(b"c jobs 1\ng depth 1\n"))
    store.apply(2, updates(b"c jobs 1\n"))
    store.drop_node(1)
    assert store.value("jobs_total", 1) is None and store.total_series == 1
    assert [node for node, _, _ in store.node_stats()] == [2]


def test_histograms_from_bucket_deltas_and_observations() -> None:
    store = MetricStore()
    store.apply(0, updates(b"t histogram took 0.1,1 Time.\nh took 3 2.55 1 1\n"))
    store.apply(0, updates(b"o took 0.05\no took 7\n"))
    out = text(store)
    assert ('took_bucket{node="0",le="0.1"} 2.0\n'
            'took_bucket{node="0",le="1.0"} 3.0\n'
            'took_bucket{node="0",le="+Inf"} 5.0\n'
            'took_sum{node="0"} 9.6\n'
            'took_count{node="0"} 5.0\n') in out


def test_an_observed_histogram_without_declaration_gets_the_default_bounds() -> None:
    store = MetricStore()
    store.apply(0, updates(b"o took 0.3\n"))
    assert 'took_bucket{node="0",le="0.005"} 0.0' in text(store)
    assert 'took_bucket{node="0",le="0.5"} 1.0' in text(store)


def test_bucket_counts_need_the_nodes_declaration() -> None:
    store = MetricStore()
    events = store.apply(0, updates(b"h took 1 1 1\n"))
    assert [e.kind for e in events] == [EventKind.UNDECLARED]
    assert "without declaring its bounds first" in events[0].message
    declared_elsewhere = store.apply(1, updates(b"t histogram took 1 x\n"))
    assert declared_elsewhere == []
    events = store.apply(0, updates(b"h took 1 1 1\n"))  # slot 1's bounds are not slot 0's
    assert events == []  # refused again, but told once per node process
    assert dict((n, r) for n, _, r in store.node_stats())[0] == 2
    assert "took_count" not in text(store)


def test_bucket_counts_that_do_not_fit_are_refused() -> None:
    store = MetricStore()
    store.apply(0, updates(b"t histogram took 1,2 x\n"))
    events = store.apply(0, updates(b"h took 1 1 1\n"))
    assert [e.kind for e in events] == [EventKind.BUCKETS]
    assert "sent 1 bucket counts for histogram took, which it declared with 2" in \
        events[0].message


def test_new_bounds_restart_that_slots_histogram() -> None:
    store = MetricStore()
    store.apply(0, updates(b"t histogram took 1 x\nh took 2 2 1\n"))
    store.apply(1, updates(b"t histogram took 1 x\nh took 2 2 1\n"))
    events = store.apply(0, updates(b"t histogram took 1,2 x\nh took 1 1 1 0\n"))
    assert [e.kind for e in events] == [EventKind.BUCKETS]
    out = text(store)
    assert 'took_count{node="0"} 1.0' in out and 'took_count{node="1"} 2.0' in out
    assert 'took_bucket{node="0",le="2.0"} 1.0' in out


def test_one_name_one_type_in_the_whole_fleet() -> None:
    store = MetricStore()
    store.apply(1, updates(b"t gauge jobs_total x\ng jobs_total 1\n"))
    events = store.apply(2, updates(b"c jobs 1\n"))
    assert [e.kind for e in events] == [EventKind.TYPE_CONFLICT]
    assert events[0].message == ("node 2 sent jobs_total as a counter, but it is a gauge (as "
                                 "first seen in this fleet): refused; one name, one type")
    assert store.apply(2, updates(b"t counter jobs_total x\n")) == []  # told already
    assert dict((n, r) for n, _, r in store.node_stats()) == {1: 0, 2: 2}
    store.node_ended(2)
    assert [e.kind for e in store.apply(2, updates(b"c jobs 1\n"))] == [EventKind.TYPE_CONFLICT]


def test_names_a_histograms_series_use_are_refused() -> None:
    store = MetricStore()
    store.apply(0, updates(b"o took 1\n"))
    events = store.apply(0, updates(b"g took_count 1\n"))
    assert [e.kind for e in events] == [EventKind.NAME_CLASH]
    assert "clashes with the series of histogram took" in events[0].message
    store.apply(0, updates(b"g lat_sum 1\n"))
    events = store.apply(0, updates(b"o lat 1\n"))
    assert [e.kind for e in events] == [EventKind.NAME_CLASH]
    assert "clashes with the gauge lat_sum" in events[0].message


def test_a_node_inventing_label_values_is_cut_off_with_one_event() -> None:
    store = MetricStore(Caps(series_per_node=100, series=1000))
    store.apply(0, updates(b"c jobs 1\n"))
    for start in range(0, 1000, 50):
        events = store.apply(1, updates(b"".join(b'c req{id="%d"} 1\n' % i
                                                 for i in range(start, start + 50))))
        if start == 100:
            assert [e.kind for e in events] == [EventKind.NODE_CAP]
            assert "node 1 reached 100 metric series" in events[0].message
            assert "here in req_total" in events[0].message
        else:
            assert events == []
    stats = {node: (series, refused) for node, series, refused in store.node_stats()}
    assert stats == {0: (1, 0), 1: (100, 900)}
    store.apply(1, updates(b'c req{id="0"} 1\n'))  # a series it has keeps counting
    assert store.value("req_total", 1, 'id="0"') == 2.0
    assert store.apply(0, updates(b"c more 1\n")) == []  # the others are not cut off


def test_the_total_cap_holds_for_the_fleet() -> None:
    store = MetricStore(Caps(series_per_node=100, series=150))
    store.apply(0, updates(b"".join(b'c req{id="%d"} 1\n' % i for i in range(100))))
    events = store.apply(1, updates(b"".join(b'c req{id="%d"} 1\n' % i for i in range(100))))
    assert [e.kind for e in events] == [EventKind.TOTAL_CAP]
    assert store.total_series == 150


def test_a_histogram_costs_its_buckets_and_three() -> None:
    store = MetricStore(Caps(series_per_node=10, series=100))
    store.apply(0, updates(b"t histogram took 1,2 x\nh took 1 1 1 0\n"))
    assert store.total_series == 5
    events = store.apply(0, updates(b'h took{q="a"} 1 1 1 0\nh took{q="b"} 1 1 1 0\n'))
    assert [e.kind for e in events] == [EventKind.NODE_CAP]
    assert store.total_series == 10


def test_events_per_node_process_are_bounded() -> None:
    store = MetricStore()
    store.apply(0, updates(b"".join(b"g g%d_total 1\n" % i for i in range(100))))
    events = store.apply(1, updates(b"".join(b"c g%d 1\n" % i for i in range(100))))
    assert len(events) == MAX_EVENTS_PER_NODE
    assert dict((n, r) for n, _, r in store.node_stats())[1] == 100


def test_help_comes_from_the_last_declaration_or_a_placeholder() -> None:
    store = MetricStore()
    store.apply(0, updates(b"c jobs 1\n"))
    assert "# HELP jobs_total An app metric of swarmd's nodes (the app gave no help text)." \
        in text(store)
    store.apply(0, updates(b"t counter jobs Jobs done.\n"))
    assert "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\n" in text(store)


def test_a_snapshot_carries_the_store_over_a_hand_over() -> None:
    import json

    store = MetricStore(Caps(series_per_node=100, series=1000))
    store.apply(0, updates(b't histogram took 1,2 x\nh took 3 4.5 1 1\nc jobs{q="a"} 5\n'
                           b"g depth nan\nt counter jobs Jobs done.\n"))
    store.apply(1, updates(b"c jobs 2\n"))
    store.apply(1, HealthParser().feed(b"g jobs_total 1\n").metrics)  # type: ignore[arg-type]
    data = json.loads(json.dumps(snapshot(store)))
    again = restore(MetricStore(store.caps), data)
    assert text(again) == text(store)
    assert again.total_series == store.total_series == 8  # 5 for took, 3 plain
    assert list(again.node_stats()) == list(store.node_stats())
    again.apply(0, updates(b"h took 1 1 0 1\n"))  # no declaration needed again
    assert 'took_count{node="0"} 4.0' in text(again)
    again.apply(0, updates(b'c jobs{q="a"} 1\n'))
    assert again.value("jobs_total", 0, 'q="a"') == 6.0


@pytest.mark.parametrize("data", [None, {}, {"version": 2}, {"version": 1, "nodes": {},
                                  "families": [{"name": "x", "kind": "summary"}]}])
def test_a_bad_snapshot_is_refused_plainly(data: object) -> None:
    with pytest.raises(ValueError, match="not a metrics snapshot"):
        restore(MetricStore(), data)
