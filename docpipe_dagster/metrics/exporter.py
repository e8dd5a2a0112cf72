"""`docpipe metrics`: the pipeline's metrics on their own port, for deployments without the API."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server

from docpipe_dagster.metrics.collector import PipelineCollector
from docpipe_dagster.store.metrics import open_metrics_pool


def serve(url: str, host: str, port: int, echo: Callable[[str], None] = print) -> int:
    """Serve /metrics on host:port until SIGINT or SIGTERM; each scrape reads `url` once."""
    pool = open_metrics_pool(url)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(lambda: pool.connection(timeout=5)))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        pool.close()
        echo(f"error: cannot listen on {host}:{port}: {exc}")
        return 2
    echo(f"docpipe metrics on http://{host}:{port}/metrics (Ctrl-C stops)")
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join(timeout=5)
        pool.close()
    return 0
