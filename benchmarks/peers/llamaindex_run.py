"""LlamaIndex's IngestionPipeline, as its docs show it: `python -m benchmarks.peers.llamaindex_run`.

Documents (one per file, `id_` = storage key) -> SentenceSplitter (the spec's chunk size and
overlap: in tokens with LlamaIndex's default tokenizer, e.g. its usual 512/50, or in characters,
`tokenizer=list`, for docpipe's) -> OpenAIEmbedding (the embedder mock) ->
PGVectorStore with its HNSW index (cosine), and a SimpleDocumentStore with the default
`upserts` strategy, persisted to a folder between runs (`pipeline.persist` / `load`), which is
what makes an unchanged re-run skip the documents (the transformation cache is off: see below).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

from pathlib import Path  # noqa: E402

from llama_index.core import Document  # noqa: E402
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.storage.docstore import SimpleDocumentStore  # noqa: E402
from llama_index.embeddings.openai import OpenAIEmbedding  # noqa: E402
from llama_index.vector_stores.postgres import PGVectorStore  # noqa: E402

from benchmarks.peers.common import load_corpus, read_spec, sqlalchemy_url, write_result  # noqa: E402

IMPORTED = time.perf_counter()


def main() -> None:
    spec = read_spec()
    t0 = time.perf_counter()
    persist_dir = Path(spec["state_dir"])
    vector_store = PGVectorStore.from_params(
        connection_string=sqlalchemy_url(spec["database_url"], "psycopg2"),
        async_connection_string=sqlalchemy_url(spec["database_url"], "asyncpg"),
        table_name="bench",
        embed_dim=spec["dims"],
        hnsw_kwargs={
            "hnsw_m": 16,
            "hnsw_ef_construction": 64,
            "hnsw_ef_search": 40,
            "hnsw_dist_method": "vector_cosine_ops",
        },
    )
    embed_model = OpenAIEmbedding(
        model=spec["model"],
        dimensions=spec["dims"] if spec.get("send_dimensions") else None,
        api_base=spec["embedder_url"],
        api_key=spec["api_key"],
    )
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(
                chunk_size=spec["chunk_size"],
                chunk_overlap=spec["chunk_overlap"],
                # tokens: the default tokenizer (tiktoken, its files shipped in the package)
                tokenizer=list if spec.get("chunk_unit", "chars") == "chars" else None,
            ),
            embed_model,
        ],
        vector_store=vector_store,
        docstore=SimpleDocumentStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS,
        # The transformation cache would persist every node with its vector as JSON and
        # reload it on each run (~7 s of a 300-document re-run); the docstore alone already
        # skips unchanged documents, so the faster configuration is the one compared.
        disable_cache=True,
    )
    if (persist_dir / "docstore.json").exists():
        pipeline.load(str(persist_dir))
    docs = [
        Document(text=body, id_=key, metadata={"file_path": key})
        for key, body in load_corpus(Path(spec["storage_dir"]))
    ]
    nodes = pipeline.run(documents=docs)
    pipeline.persist(str(persist_dir))
    seconds = time.perf_counter() - t0
    write_result(
        spec,
        STARTED,
        IMPORTED,
        seconds=seconds,
        documents=len(docs),
        chunks=len(nodes),
        embedded=len(nodes),
    )


if __name__ == "__main__":
    main()
