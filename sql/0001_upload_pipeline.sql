-- The upload_pipeline schema: per-document job state, staging buffers, caches, the audit
-- trail and the searchable chunks. Constraints carry the invariants so that a bug in the
-- pipeline fails loudly instead of storing something wrong.

CREATE EXTENSION IF NOT EXISTS vector;

-- One row per (document, content version). job_id = UUIDv5(document_id, content_sha256),
-- document_id = UUIDv5(storage key relative to the storage root).
CREATE TABLE upload_pipeline.upload_jobs (
    job_id             uuid PRIMARY KEY,
    document_id        uuid        NOT NULL,
    storage_key        text        NOT NULL CHECK (length(storage_key) BETWEEN 1 AND 1024),
    content_sha256     text        NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes         bigint      NOT NULL CHECK (size_bytes >= 0),
    media_type         text,
    source_modified_at timestamptz,
    state              text        NOT NULL DEFAULT 'uploaded' CHECK (state IN (
                           'uploaded', 'parsing', 'parsed', 'chunked', 'embedded',
                           'completed', 'failed', 'deleted', 'superseded')),
    batch_key          text,
    attempts           integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    failed_stage       text CHECK (failed_stage IN ('intake', 'parse', 'chunk', 'embed', 'commit')),
    failure_code       text,
    failure_reason     text,
    retryable          boolean,
    next_attempt_at    timestamptz,
    parse_job_id       text,
    page_count         integer,
    chunk_count        integer CHECK (chunk_count >= 0),
    token_count        integer CHECK (token_count >= 0),
    -- when this version was (re)registered: the newest registration of a document wins
    registered_at      timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    UNIQUE (document_id, content_sha256),
    -- a failed job always says where and why, in words a person can read
    CONSTRAINT failed_has_reason CHECK (
        state <> 'failed' OR (failed_stage IS NOT NULL AND coalesce(length(btrim(failure_reason)), 0) > 0)
    )
);
CREATE INDEX upload_jobs_state_idx ON upload_pipeline.upload_jobs (state);
CREATE INDEX upload_jobs_batch_idx ON upload_pipeline.upload_jobs (batch_key);
CREATE INDEX upload_jobs_document_idx ON upload_pipeline.upload_jobs (document_id);
CREATE INDEX upload_jobs_key_idx ON upload_pipeline.upload_jobs (storage_key, registered_at DESC);

-- Parsed output keyed by content: the same bytes are never parsed (and paid for) twice.
CREATE TABLE upload_pipeline.parse_cache (
    content_sha256 text        NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    parser_profile text        NOT NULL,
    markdown       text        NOT NULL,
    page_count     integer     NOT NULL DEFAULT 0,
    parse_job_id   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (content_sha256, parser_profile)
);

-- Staged chunks of a job that is not committed yet.
-- chunk_id = UUIDv5(document_id, content_sha256, chunk_index): same input, same ids.
CREATE TABLE upload_pipeline.document_chunk_buffer (
    chunk_id       uuid PRIMARY KEY,
    job_id         uuid        NOT NULL REFERENCES upload_pipeline.upload_jobs (job_id) ON DELETE CASCADE,
    chunk_index    integer     NOT NULL CHECK (chunk_index >= 0),
    content        text        NOT NULL CHECK (length(content) > 0),
    text_sha256    text        NOT NULL,
    token_estimate integer     NOT NULL CHECK (token_estimate >= 0),
    heading_path   text[]      NOT NULL DEFAULT '{}',
    char_start     integer     NOT NULL,
    char_end       integer     NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, chunk_index)
);

-- Staged vectors, one per buffered chunk.
CREATE TABLE upload_pipeline.document_vector_buffer (
    chunk_id        uuid PRIMARY KEY REFERENCES upload_pipeline.document_chunk_buffer (chunk_id) ON DELETE CASCADE,
    job_id          uuid        NOT NULL REFERENCES upload_pipeline.upload_jobs (job_id) ON DELETE CASCADE,
    embedding_model text        NOT NULL,
    dims            integer     NOT NULL CHECK (dims > 0),
    embedding       vector      NOT NULL CHECK (vector_dims(embedding) = dims),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX document_vector_buffer_job_idx ON upload_pipeline.document_vector_buffer (job_id);

-- The same text is never paid for twice, across documents and re-runs.
CREATE TABLE upload_pipeline.embedding_cache (
    embedding_model text        NOT NULL,
    dims            integer     NOT NULL CHECK (dims > 0),
    text_sha256     text        NOT NULL,
    embedding       vector      NOT NULL CHECK (vector_dims(embedding) = dims),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (embedding_model, dims, text_sha256)
);

-- Append-only audit trail (enforced by the trigger below).
CREATE TABLE upload_pipeline.events (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid        NOT NULL REFERENCES upload_pipeline.upload_jobs (job_id),
    stage      text        NOT NULL,
    event_type text        NOT NULL,
    payload    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_job_idx ON upload_pipeline.events (job_id, event_id);

CREATE FUNCTION upload_pipeline.events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'upload_pipeline.events is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON upload_pipeline.events
    FOR EACH ROW EXECUTE FUNCTION upload_pipeline.events_append_only();

-- The searchable table. `embedding` is untyped so several embedding models (dimensions)
-- can live side by side; each (model, dims) "vector space" gets its own partial HNSW
-- index over `embedding::vector(dims)`, registered in vector_spaces.
CREATE TABLE upload_pipeline.document_chunks (
    chunk_id        uuid PRIMARY KEY,
    document_id     uuid        NOT NULL,
    job_id          uuid        NOT NULL REFERENCES upload_pipeline.upload_jobs (job_id),
    storage_key     text        NOT NULL,
    content_sha256  text        NOT NULL,
    chunk_index     integer     NOT NULL CHECK (chunk_index >= 0),
    content         text        NOT NULL CHECK (length(content) > 0),
    heading_path    text[]      NOT NULL DEFAULT '{}',
    token_estimate  integer     NOT NULL,
    embedding_model text        NOT NULL,
    dims            integer     NOT NULL CHECK (dims > 0),
    embedding       vector      NOT NULL CHECK (vector_dims(embedding) = dims),
    committed_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (document_id, embedding_model, dims, chunk_index)
);
CREATE INDEX document_chunks_document_idx ON upload_pipeline.document_chunks (document_id);
CREATE INDEX document_chunks_job_idx ON upload_pipeline.document_chunks (job_id);

-- HNSW indexes `vector` up to 2,000 dimensions and `halfvec` up to 4,000.
CREATE TABLE upload_pipeline.vector_spaces (
    embedding_model text        NOT NULL,
    dims            integer     NOT NULL CHECK (dims > 0 AND dims <= 4000),
    vector_type     text        NOT NULL DEFAULT 'vector' CHECK (vector_type IN ('vector', 'halfvec')),
    index_name      text        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (embedding_model, dims)
);

-- The default space: OpenAI text-embedding-3-small at its native 1536 dimensions.
CREATE INDEX document_chunks_hnsw_te3s_1536 ON upload_pipeline.document_chunks
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops)
    WHERE embedding_model = 'text-embedding-3-small' AND dims = 1536;
INSERT INTO upload_pipeline.vector_spaces (embedding_model, dims, index_name)
VALUES ('text-embedding-3-small', 1536, 'document_chunks_hnsw_te3s_1536');
