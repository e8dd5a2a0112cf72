"""/metrics on the HTTP API: the pipeline's metrics plus the API's own requests by route."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from psycopg_pool import ConnectionPool

from docpipe_dagster.metrics.collector import PipelineCollector
from docpipe_dagster.metrics.names import API_BOUNDS


def install(app: FastAPI, pool: Callable[[], ConnectionPool]) -> CollectorRegistry:
    """Add GET /metrics (no key, as /health: counts only, no secrets) and count every
    request by its route template, never its path (a storage key is not a label)."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(lambda: pool().connection(timeout=5)))
    requests = Counter(
        "docpipe_api_requests",
        "HTTP API requests by route template, method and status code.",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "docpipe_api_request_seconds",
        "HTTP API request latency by route template and method.",
        ["route", "method"],
        buckets=API_BOUNDS,
        registry=registry,
    )

    @app.middleware("http")
    async def count_requests(request: Any, call_next: Callable) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            requests.labels(template, request.method, str(status)).inc()
            latency.labels(template, request.method).observe(time.perf_counter() - started)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry
