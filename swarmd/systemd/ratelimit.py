"""How much of each node's output reaches the log: a token bucket per node.

journald rate-limits per unit, so one node printing as fast as it can would make journald drop
the other nodes' lines and the supervisor's own entries alike. swarmd limits each node first
(config `output:`), well below journald's limit set in the unit, and says what it dropped: one
`node.output_dropped` entry per node at most every REPORT_EVERY seconds. Pure: the caller gives
the time, forwards the lines it is allowed to, and arms a timer for the report.
"""

from __future__ import annotations

from swarmd.config.output import OutputLimit
from swarmd.systemd.events import Event, NodeRef

REPORT_EVERY = 10.0  # seconds between two node.output_dropped entries of one node


class _Bucket:
    __slots__ = ("tokens", "stamp", "dropped", "since", "reported_at")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.stamp = now
        self.dropped = 0  # lines dropped since `since`, not reported yet
        self.since = now
        self.reported_at = float("-inf")  # never: the first report may be made at once


class OutputLimiter:
    """Per-node token buckets: `rate` tokens a second up to `burst`, one line costs one."""

    def __init__(self, limit: OutputLimit, every: float = REPORT_EVERY) -> None:
        self.limit = limit
        self.every = every
        self._buckets: dict[int, _Bucket] = {}

    def take(self, node: int, lines: int, now: float) -> int:
        """How many of `lines` (the first ones) node `node` may send to the log now; the
        rest are counted as dropped. O(1), for a read of any number of lines."""
        rate = self.limit.rate
        if rate is None:
            return lines
        bucket = self._buckets.get(node)
        if bucket is None:
            bucket = self._buckets[node] = _Bucket(float(self.limit.burst), now)
        elif now > bucket.stamp:
            bucket.tokens = min(float(self.limit.burst),
                                bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
        allowed = min(lines, int(bucket.tokens + 1e-9))  # 0.1 s at 100/s is 9.999...: 10
        bucket.tokens -= allowed
        if allowed < lines:
            if not bucket.dropped:
                bucket.since = now
            bucket.dropped += lines - allowed
        return allowed

    def dropped(self, node: int) -> int:
        """Lines of `node` dropped and not reported yet."""
        bucket = self._buckets.get(node)
        return 0 if bucket is None else bucket.dropped

    def report_at(self, node: int) -> float:
        """When the next report of `node` may be made (arm a timer for it after a drop); in
        the past when it may be made at once."""
        bucket = self._buckets.get(node)
        return 0.0 if bucket is None else bucket.reported_at + self.every

    def report(self, node: int, now: float, force: bool = False) -> tuple[int, float]:
        """(lines dropped, seconds they were dropped over) to put in an entry now, counted
        as reported; (0, 0) when there are none, or when the last report of this node was
        less than `every` ago, unless `force` (the node exited: its story ends here)."""
        bucket = self._buckets.get(node)
        if bucket is None or not bucket.dropped:
            return 0, 0.0
        if not force and now < bucket.reported_at + self.every:
            return 0, 0.0
        count, span = bucket.dropped, max(0.0, now - bucket.since)
        bucket.dropped = 0
        bucket.reported_at = now
        return count, span

    def forget(self, node: int) -> None:
        """A slot that is gone (scaled down): its bucket goes too."""
        self._buckets.pop(node, None)

    def configure(self, limit: OutputLimit) -> None:
        """A reload's new limit; buckets keep their counts (tokens are capped at the next
        take)."""
        self.limit = limit


def output_dropped_event(node: NodeRef, count: int, span: float, limit: OutputLimit) -> Event:
    """The node.output_dropped entry: how many lines, over how long, under which limit."""
    return Event("node.output_dropped",
                 f"node {node.id} wrote faster than its output limit ({limit.describe()}): "
                 f"{count} line(s) of its output dropped over {span:.1f}s",
                 node, fields={"SWARMD_DROPPED": count})
