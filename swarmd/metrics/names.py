"""Prometheus naming rules, checked once where a metric is made (node side) or first seen
(supervisor side), never per update."""

from __future__ import annotations

import enum
import math
import re

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
RESERVED_PREFIX = "swarmd_"  # the fleet's own series
RESERVED_LABELS = ("node",)  # added by the supervisor to every app series
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
MAX_NAME = 200
MAX_LABELS = 16
MAX_BUCKETS = 64
MAX_LINE = 4096  # bytes in one metric line on a health pipe
KEYWORDS = frozenset(b"tcgoh")  # first byte of a metric line, followed by a space
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                   10.0)


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


def is_metric_line(line: bytes) -> bool:
    return line[1:2] == b" " and line[0] in KEYWORDS


def check_name(name: object, kind: Kind) -> str:
    """The family name as exposed: a counter gets `_total` if it lacks it (prometheus_client
    does the same), so `counter("jobs")` and `c jobs 1` both count `jobs_total`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"metric name {name!r} is not a Prometheus name: letters, digits and "
                         f"_, not starting with a digit (colons are for recording rules)")
    if len(name) > MAX_NAME:
        raise ValueError(f"metric name {name[:40]!r}... is longer than {MAX_NAME} characters")
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(f"metric name {name!r}: the prefix {RESERVED_PREFIX} is reserved for "
                         f"the supervisor's own series; name it after your app")
    if name.startswith("__"):
        raise ValueError(f"metric name {name!r}: names starting with __ are reserved by "
                         f"Prometheus")
    if kind is Kind.COUNTER and not name.endswith("_total"):
        name += "_total"
    if kind is Kind.HISTOGRAM and name.endswith(HISTOGRAM_SUFFIXES):
        raise ValueError(f"histogram name {name!r} ends in a suffix its own series get "
                         f"(_bucket, _sum, _count); drop it")
    return name


def check_label_name(label: object, kind: Kind) -> str:
    if not isinstance(label, str) or not _NAME.match(label):
        raise ValueError(f"label name {label!r} is not a Prometheus name: letters, digits "
                         f"and _, not starting with a digit")
    if label.startswith("__"):
        raise ValueError(f"label name {label!r}: names starting with __ are reserved by "
                         f"Prometheus")
    if label in RESERVED_LABELS:
        raise ValueError(f"label name {label!r} is added by the supervisor (the slot id); "
                         f"choose another name")
    if kind is Kind.HISTOGRAM and label == "le":
        raise ValueError("label name 'le' is a histogram's bucket bound; choose another name")
    return label


def check_label_names(labels: object, kind: Kind) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise ValueError(f"labelnames must be a list of names, got the string {labels!r}; "
                         f"write ({labels!r},)")
    names = tuple(check_label_name(label, kind) for label in labels)  # type: ignore[attr-defined]
    if len(set(names)) != len(names):
        raise ValueError(f"label names {names!r} repeat a name")
    if len(names) > MAX_LABELS:
        raise ValueError(f"{len(names)} label names; at most {MAX_LABELS}")
    return names


def check_buckets(buckets: object) -> tuple[float, ...]:
    """Upper bounds, strictly ascending and finite; a trailing +Inf is implicit and dropped."""
    try:
        bounds = [float(b) for b in buckets]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"buckets must be a list of numbers, got {buckets!r}") from None
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if not bounds:
        raise ValueError("a histogram needs at least one finite bucket bound")
    if len(bounds) > MAX_BUCKETS:
        raise ValueError(f"{len(bounds)} buckets; at most {MAX_BUCKETS}")
    if any(not math.isfinite(b) for b in bounds):
        raise ValueError(f"bucket bounds must be finite numbers (+Inf is implicit), "
                         f"got {buckets!r}")
    if any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"bucket bounds must be strictly ascending, got {buckets!r}")
    return tuple(bounds)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as the text format wants it: Go's float syntax, +Inf, -Inf, NaN."""
    if value - value == 0:  # finite (inf - inf and nan - nan are nan)
        return repr(value)
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"
