"""OpenAI embeddings mock (see mocks/openai/app.py)."""

from __future__ import annotations
