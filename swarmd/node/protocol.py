"""Bytes from a node's pipes -> health codes, metric updates and output lines.

The health protocol is one decimal code from 0 to 255 per line ("0\\n", "3\\n"). Everything the
supervisor reads since its last read is folded into one worst code; anything else is a protocol
error that is reported, never raised, so one misbehaving node cannot stop the supervisor. The same
pipe carries metric lines (a keyword letter and a space: "c jobs_total 1\\n", the format is in
swarmd.metrics.wire); they are not reports, and a batch carries them coalesced per series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarmd.config.health import MAX_CODE
from swarmd.metrics.names import KEYWORDS, MAX_LINE, is_metric_line

if TYPE_CHECKING:  # imported at the first metric line: most fleets send none
    from swarmd.metrics.wire import MetricLineParser, MetricUpdates

MAX_HEALTH_LINE = 16  # "255\n" needs 4; anything far longer is garbage, not a slow writer
MAX_METRIC_LINE = MAX_LINE  # an unterminated line that starts like a metric line may be longer
MAX_OUTPUT_LINE = 16384


class HealthBatch:
    """What one read of a health pipe held."""

    __slots__ = ("worst", "reports", "errors", "metrics")

    def __init__(self, worst: int | None = None, reports: int = 0,
                 errors: list[str] | None = None, metrics: MetricUpdates | None = None) -> None:
        self.worst = worst  # highest valid code, None when no complete valid line arrived
        self.reports = reports  # health codes only: metric lines are not reports
        self.errors: list[str] = [] if errors is None else errors
        self.metrics = metrics  # None when no metric line arrived (the usual report)

    def merge(self, later: HealthBatch) -> None:
        """Fold the batch of a later read of the same pipe into this one."""
        self.reports += later.reports
        self.errors.extend(later.errors)
        if later.worst is not None and (self.worst is None or later.worst > self.worst):
            self.worst = later.worst
        if later.metrics is not None:
            if self.metrics is None:
                self.metrics = later.metrics
            else:
                self.metrics.merge(later.metrics)

    def __repr__(self) -> str:
        return f"HealthBatch(worst={self.worst!r}, reports={self.reports!r}, " \
               f"errors={self.errors!r}, metrics={self.metrics!r})"


def _parse_code(line: bytes) -> int | None:
    text = line.strip()
    if 0 < len(text) <= 3 and text.isdigit():
        code = int(text)
        if code <= MAX_CODE:
            return code
    return None


def _show(line: bytes) -> str:
    """A bytes literal of what arrived, cut at 40 bytes: b'hello', b'\\x00\\xff'."""
    return repr(line[:40]) + ("..." if len(line) > 40 else "")


def _only_healthy(body: bytes) -> bool:
    """True when newline-terminated `body` is nothing but "0\\n" lines."""
    return (not body.translate(None, b"0\n") and b"00" not in body and b"\n\n" not in body
            and body[0] != 0x0A)


class HealthParser:
    """Keeps the partial line between reads of one pipe."""

    def __init__(self) -> None:
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop up to its newline
        # nothing pending, the next byte starts a line (a plain attribute: read per wake-up)
        self.at_line_start = True
        self._metric_parser: MetricLineParser | None = None  # made at the first metric line

    def feed(self, data: bytes) -> HealthBatch:
        batch = HealthBatch()
        if self._partial:
            data = self._partial + data
            self._partial = b""
        end = data.rfind(b"\n") + 1
        body, tail = data[:end], data[end:]
        if self._skipping and body:
            body = body[body.index(b"\n") + 1:]
            self._skipping = False
        if body and _only_healthy(body):  # the usual flood: checked at C speed, no lines made
            batch.worst, batch.reports = 0, body.count(b"\n")
        elif body:
            lines = body.split(b"\n")
            lines.pop()  # the empty string after the last newline
            if b" " in body:  # every metric line has one, no plain code has
                lines = self._metric_lines(lines, batch)
            batch.reports = len(lines)
            # A flood repeats a few distinct lines: parse each distinct one once.
            for line in dict.fromkeys(lines):
                code = _parse_code(line)
                if code is None:
                    count = lines.count(line)
                    batch.reports -= count
                    batch.errors.append(f"expected a code from 0 to 255 per line, got "
                                        f"{_show(line)}"
                                        + (f" ({count} times)" if count > 1 else ""))
                elif batch.worst is None or code > batch.worst:
                    batch.worst = code
        if not self._skipping:
            if len(tail) > MAX_HEALTH_LINE and (len(tail) > MAX_METRIC_LINE
                                                or not is_metric_line(tail)):
                limit = MAX_METRIC_LINE if is_metric_line(tail) else MAX_HEALTH_LINE
                batch.errors.append(f"a line longer than {limit} bytes without "
                                    f"newline: {_show(tail)}; dropped up to the next newline")
                self._skipping = True
            else:
                self._partial = tail
        self.at_line_start = not self._partial and not self._skipping
        return batch

    def _metric_lines(self, lines: list[bytes], batch: HealthBatch) -> list[bytes]:
        """Parse the metric lines (in their order: a gauge's last value wins) into
        batch.metrics; returns the other lines, for the codes' path."""
        metric = [line for line in lines if line[1:2] == b" " and line[0] in KEYWORDS]
        if not metric:
            return lines
        parser = self._metric_parser
        if parser is None:
            from swarmd.metrics.wire import MetricLineParser

            parser = self._metric_parser = MetricLineParser()
        batch.metrics = parser.updates(metric, batch.errors)
        if len(metric) == len(lines):
            return []
        return [line for line in lines if not (line[1:2] == b" " and line[0] in KEYWORDS)]

    def close(self) -> HealthBatch:
        """The pipe hit EOF: an unterminated last line is still a report if it parses."""
        batch = HealthBatch()
        if self._partial and not self._skipping and is_metric_line(self._partial):
            self._metric_lines([self._partial], batch)
        elif self._partial and not self._skipping:
            code = _parse_code(self._partial)
            if code is None:
                batch.errors.append(f"unterminated garbage at end of pipe: {_show(self._partial)}")
            else:
                batch.worst, batch.reports = code, 1
        self._partial = b""
        self.at_line_start = not self._skipping
        return batch


class LineSplitter:
    """Splits a node's stdout/stderr bytes into text lines, bounding a line's length."""

    def __init__(self, limit: int = MAX_OUTPUT_LINE) -> None:
        self._partial = b""
        self._limit = limit
        # the pending line went out in full pieces up to its last byte: a newline coming
        # next only ends it (it is no empty line of its own)
        self._cut = False

    def feed(self, data: bytes) -> list[str]:
        if not data:
            return []
        if self._cut:
            self._cut = False
            if data[:1] == b"\n":
                data = data[1:]
        data = self._partial + data if self._partial else data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        limit = self._limit
        out: list[bytes] = []
        for line in lines:
            if len(line) <= limit:
                out.append(line)
            else:  # a journal entry per `limit` bytes, never one unbounded entry
                out.extend(line[i:i + limit] for i in range(0, len(line), limit))
        if len(self._partial) >= limit:
            while len(self._partial) >= limit:
                out.append(self._partial[:limit])
                self._partial = self._partial[limit:]
            self._cut = not self._partial
        return [line.decode("utf-8", "replace").rstrip("\r") for line in out]

    def close(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return [rest.decode("utf-8", "replace").rstrip("\r")] if rest else []
