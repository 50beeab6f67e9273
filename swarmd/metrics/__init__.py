"""Metrics: app metrics from the nodes and the fleet's own series, in the Prometheus text format.

node.py      inside a node: `node.metrics`, updates kept in memory and flushed as wire lines
wire.py      the metric lines on a node's health pipe (format and parser)
store.py     in the supervisor: app metric families per slot, counters across restarts, caps
exposition.py, fleet.py   the text format 0.0.4 writer; the fleet's series from a plain sample
endpoint.py  GET /metrics served from the supervisor's epoll loop, never blocking it
textfile.py  the node_exporter textfile, written by a short-lived forked writer
No module here imports prometheus_client: the supervisor stays small for its forks.
"""
