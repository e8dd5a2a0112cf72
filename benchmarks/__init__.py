"""The ingest benchmark: `python -m benchmarks.ingest --help` (see benchmarks/README.md)."""
