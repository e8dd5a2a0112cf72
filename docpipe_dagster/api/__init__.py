"""The HTTP API (FastAPI): upload, document state, search, health. `docpipe api` runs it."""
