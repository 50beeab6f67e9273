"""The `metrics:` section: where the endpoint listens, the node_exporter textfile, the caps.

Called from swarmd.config._build with the section's data and the shared Checker, so its
problems read like every other key's (key path and YAML line) and `swarmd check` refuses the
same files `swarmd run` would.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # a runtime import would be circular: swarmd.config imports this module
    from swarmd.config.checker import Checker
    from swarmd.metrics.address import Address
    from swarmd.metrics.store import Caps

KEYS = ("listen", "textfile", "max_series_per_node", "max_series")
MAX_SERIES_LIMIT = 10_000_000
SERIES_PER_NODE = 2000  # the store's default caps (swarmd.metrics.store.Caps)
SERIES = 50_000


class MetricsConfig(NamedTuple):
    """The section, as checked: the address as written (valid), parsed where it is used,
    so that the supervisor's config needs no metrics module at start."""

    listen: str | None = None  # None: no endpoint (the default)
    textfile: str | None = None  # None: no textfile
    max_series_per_node: int = SERIES_PER_NODE
    max_series: int = SERIES

    @property
    def address(self) -> Address | None:
        from swarmd.metrics.address import parse_address

        return parse_address(self.listen) if self.listen is not None else None

    @property
    def caps(self) -> Caps:
        from swarmd.metrics.store import Caps

        return Caps(series_per_node=self.max_series_per_node, series=self.max_series)

    @property
    def enabled(self) -> bool:
        """Whether anyone reads the metrics: without it, the supervisor keeps no store."""
        return self.listen is not None or self.textfile is not None


def check_metrics(data: Any, c: Checker) -> MetricsConfig:
    section = c.mapping(data, "metrics")
    c.unknown_keys(section, KEYS, "metrics.")
    defaults = MetricsConfig()
    listen = None
    if section.get("listen") is not None:
        from swarmd.metrics.address import parse_address

        try:
            listen = str(parse_address(section["listen"]))
        except ValueError as exc:
            c.problem("metrics.listen", str(exc))
    textfile = None
    if section.get("textfile") is not None:
        textfile = _textfile(section["textfile"], c)
    per_node = c.integer(section, "max_series_per_node", "metrics.",
                         defaults.max_series_per_node, 1, MAX_SERIES_LIMIT)
    total = c.integer(section, "max_series", "metrics.", defaults.max_series, 1,
                      MAX_SERIES_LIMIT)
    if per_node > total:
        key = "max_series_per_node" if "max_series_per_node" in section else "max_series"
        c.problem(f"metrics.{key}", f"max_series_per_node ({per_node}) is above max_series "
                                    f"({total}); one node could never reach its cap")
    return MetricsConfig(listen=listen, textfile=textfile, max_series_per_node=per_node,
                         max_series=total)


def _textfile(value: Any, c: Checker) -> str | None:
    key = "metrics.textfile"
    if not isinstance(value, str) or not value:
        c.problem(key, f"expected a file path like "
                       f"/var/lib/prometheus/node-exporter/swarmd.prom, got {value!r}")
        return None
    if not os.path.isabs(value):
        c.problem(key, f"expected an absolute path, got {value!r}")
        return None
    if not value.endswith(".prom"):
        c.problem(key, f"node_exporter's textfile collector reads only *.prom files; "
                       f"name it like {os.path.splitext(value)[0]}.prom")
        return None
    directory = os.path.dirname(value)
    if not os.path.isdir(directory):
        c.problem(key, f"the directory {directory} does not exist; create it (node_exporter's "
                       f"--collector.textfile.directory) or point to it")
        return None
    return value
