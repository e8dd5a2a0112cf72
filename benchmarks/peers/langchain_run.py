"""LangChain's indexing API, as its docs show it: `python -m benchmarks.peers.langchain_run SPEC`.

Documents (one per file, `source` = storage key) -> RecursiveCharacterTextSplitter (the spec's
chunk size and overlap, in characters: LangChain's usual 2000/200 or docpipe's) ->
`index(..., cleanup="incremental")` with a
SQLRecordManager in the same Postgres -> PGVector (langchain-postgres, psycopg 3) whose
embedding column has an HNSW index (cosine) created before the load, as a user would.
OpenAIEmbeddings talks to the embedder mock; `check_embedding_ctx_length=False` sends the
texts as strings (its default sends tiktoken ids, which needs a download and would be
embedded differently by the mock).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

from pathlib import Path  # noqa: E402

from langchain_classic.indexes import SQLRecordManager, index  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_openai import OpenAIEmbeddings  # noqa: E402
from langchain_postgres import PGVector  # noqa: E402
from langchain_text_splitters import RecursiveCharacterTextSplitter  # noqa: E402
from sqlalchemy import text  # noqa: E402

from benchmarks.peers.common import load_corpus, read_spec, sqlalchemy_url, write_result  # noqa: E402

IMPORTED = time.perf_counter()
COLLECTION = "bench"


def main() -> None:
    spec = read_spec()
    t0 = time.perf_counter()
    url = sqlalchemy_url(spec["database_url"], "psycopg")
    embeddings = OpenAIEmbeddings(
        model=spec["model"],
        dimensions=spec["dims"] if spec.get("send_dimensions") else None,
        base_url=spec["embedder_url"],
        api_key=spec["api_key"],
        check_embedding_ctx_length=False,
    )
    store = PGVector(
        embeddings=embeddings,
        collection_name=COLLECTION,
        connection=url,
        embedding_length=spec["dims"],
        use_jsonb=True,
    )
    with store._make_sync_session() as session:  # the documented way has no index helper
        session.execute(
            text(
                "CREATE INDEX IF NOT EXISTS langchain_pg_embedding_hnsw ON langchain_pg_embedding"
                " USING hnsw (embedding vector_cosine_ops)"
            )
        )
        session.commit()
    record_manager = SQLRecordManager(f"pgvector/{COLLECTION}", db_url=url)
    record_manager.create_schema()
    if spec.get("chunk_unit", "chars") != "chars":
        raise SystemExit(f"langchain_run splits in characters, not {spec['chunk_unit']}")
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=spec["chunk_size"], chunk_overlap=spec["chunk_overlap"]
    )
    docs = [
        Document(page_content=body, metadata={"source": key})
        for key, body in load_corpus(Path(spec["storage_dir"]))
    ]
    chunks = splitter.split_documents(docs)
    result = index(
        chunks,
        record_manager,
        store,
        cleanup="incremental",
        source_id_key="source",
        key_encoder="sha256",
    )
    seconds = time.perf_counter() - t0
    write_result(
        spec,
        STARTED,
        IMPORTED,
        seconds=seconds,
        documents=len(docs),
        chunks=len(chunks),
        added=result["num_added"],
        updated=result["num_updated"],
        skipped=result["num_skipped"],
        deleted=result["num_deleted"],
        embedded=result["num_added"] + result["num_updated"],
    )


if __name__ == "__main__":
    main()
