"""Embedding models the pipeline knows the native vector size of (no import beyond stdlib)."""

from __future__ import annotations

MODEL_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
