"""Bucket bounds and the stage-report counters the metrics read."""

from __future__ import annotations

import re

# Upload -> searchable seconds per document; sql/0007_metrics.sql's searchable_bucket()
# uses the same bounds (a test keeps them equal).
SEARCHABLE_BOUNDS: tuple[float, ...] = (
    1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400,
)  # fmt: skip
# Seconds a stage spends on one batch.
STAGE_BOUNDS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
# API request latency.
API_BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

STATES: tuple[str, ...] = (
    "uploaded", "parsing", "parsed", "chunked", "embedded",
    "completed", "failed", "deleted", "superseded",
)  # fmt: skip
IN_FLIGHT: tuple[str, ...] = ("parsing", "parsed", "chunked", "embedded")
STAGES: tuple[str, ...] = ("intake", "parse", "chunk", "embed", "commit")
INDEX_STATES: tuple[str, ...] = ("ready", "rebuilding", "off")
SERVICES: tuple[str, ...] = ("parser", "embedder")
OUTCOMES: tuple[str, ...] = (
    "ok", "rate_limited", "server_error", "client_error", "malformed", "timeout", "unreachable",
)  # fmt: skip

# (stage, stage-report counter) -> (metric name without the prefix, help, extra labels)
STAGE_COUNTERS: dict[tuple[str, str], tuple[str, str, dict[str, str]]] = {
    ("parse", "pages"): ("parser_pages", "Pages parsed by the parser service.", {}),
    ("parse", "cache_hits"): (
        "cache_hits",
        "Documents or chunks served from a cache instead of a service.",
        {"cache": "parse"},
    ),
    ("embed", "cache_hits"): ("cache_hits", "", {"cache": "embedding"}),
    ("embed", "tokens"): ("embedding_tokens", "Tokens sent to the embeddings service.", {}),
    ("embed", "texts_sent"): ("embedding_texts", "Texts sent to the embeddings service.", {}),
    ("chunk", "chunks"): ("chunks_staged", "Chunks cut and staged by the chunk stage.", {}),
    ("embed", "vectors_staged"): ("vectors_staged", "Vectors staged by the embed stage.", {}),
}
COUNTER_NAMES: tuple[str, ...] = tuple(sorted({name for _, name in STAGE_COUNTERS}))

_LABEL_OK = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")


def bounded(value: object, fallback: str = "other") -> str:
    """A label value from data (a failure code): short and plain, else `fallback`."""
    text = "" if value is None else str(value)
    if text == "":
        return "none"
    return text if _LABEL_OK.match(text) else fallback
