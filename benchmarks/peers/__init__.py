"""LangChain's indexing API and LlamaIndex's IngestionPipeline beside `docpipe ingest --wait`.

`python -m benchmarks.peers` (or the `peers` scenario of `python -m benchmarks.ingest`); the
peers need the `bench` extra (`pip install -e .[bench]`). See benchmarks/README.md.
"""
