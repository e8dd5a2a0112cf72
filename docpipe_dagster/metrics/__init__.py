"""Prometheus metrics: the pipeline's state read from the database at scrape time
(collector.py), served by the HTTP API at /metrics (api.py) and by `docpipe metrics`
(exporter.py). docs/OPERATIONS.md lists every metric and the alert rules."""
