"""Metrics: app metrics from the nodes and the fleet's own series, in the Prometheus text format.

names.py       Prometheus naming rules, checked once where a metric is made or first seen
node.py        inside a node: `node.metrics`, updates kept in memory, flushed as wire lines
wire.py        the metric lines on a node's health pipe (format and parser)
store.py       in the supervisor: app metric families per slot, counters across restarts, caps
exposition.py  the text format 0.0.4: the fleet's series (from a FleetSample) and the apps'
address.py     metrics.listen: host:port, [v6]:port or unix:/path
endpoint.py    GET /metrics served from the supervisor's epoll loop, never blocking it
textfile.py    the node_exporter textfile, written by a short-lived spawned writer
No module here imports prometheus_client: the supervisor stays small for its forks.
"""
