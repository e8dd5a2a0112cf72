-- What the Prometheus exporter reads (docpipe_dagster/store/metrics.py, docs/OPERATIONS.md).
--
-- The work happens in many short-lived run processes, so every number a scrape shows comes
-- from the database. A scrape must stay cheap however many documents there are: counters
-- are kept in small tables written as the pipeline goes, never counted from the events or
-- the chunks at scrape time, and the gauges read upload_jobs through indexes.

-- Documents by state as `docpipe status` counts them (each document's newest version):
-- an index-only scan in document order instead of a sort of the whole table.
CREATE INDEX upload_jobs_latest_idx
    ON upload_pipeline.upload_jobs (document_id, registered_at DESC) INCLUDE (state);
-- The backlog's size and oldest registration without reading every waiting row.
CREATE INDEX upload_jobs_backlog_idx
    ON upload_pipeline.upload_jobs (registered_at) WHERE state = 'uploaded';

-- Upload -> searchable histogram buckets (seconds). The exporter declares the same bounds
-- (docpipe_dagster/metrics/names.py); a test keeps the two equal.
CREATE FUNCTION upload_pipeline.searchable_bucket(seconds double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(min(b), 'Infinity'::double precision)
    FROM unnest(ARRAY[1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400]
                ::double precision[]) AS b
    WHERE b >= seconds
$$;

-- Running totals of the audit trail, one row per INSERT statement into events (grouped by
-- stage, type, failure code and, for commits, the upload -> searchable bucket). Insert-only:
-- concurrent runs never wait on a shared counter row. A scrape sums it (a few rows per batch).
CREATE TABLE upload_pipeline.event_tallies (
    tally_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stage        text             NOT NULL,
    event_type   text             NOT NULL,
    code         text             NOT NULL DEFAULT '',
    bucket_le    double precision,  -- completed commits: upload -> searchable bucket
    n            bigint           NOT NULL,
    chunks       bigint           NOT NULL DEFAULT 0,
    seconds_sum  double precision NOT NULL DEFAULT 0,  -- completed commits: upload -> searchable
    recorded_at  timestamptz      NOT NULL DEFAULT now()
);

CREATE FUNCTION upload_pipeline.tally_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO upload_pipeline.event_tallies
        (stage, event_type, code, bucket_le, n, chunks, seconds_sum)
    SELECT e.stage, e.event_type, coalesce(e.payload->>'code', ''),
           upload_pipeline.searchable_bucket(w.seconds), count(*),
           coalesce(sum(CASE WHEN e.event_type = 'completed'
                             THEN (e.payload->>'chunks')::bigint END), 0),
           coalesce(sum(w.seconds), 0)
    FROM new_events e
    LEFT JOIN upload_pipeline.upload_jobs j
        ON e.event_type = 'completed' AND j.job_id = e.job_id
    CROSS JOIN LATERAL (
        SELECT extract(epoch FROM e.created_at - j.registered_at)::double precision AS seconds
    ) w
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_tally
    AFTER INSERT ON upload_pipeline.events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION upload_pipeline.tally_events();

-- The audit trail written before this migration, tallied once.
INSERT INTO upload_pipeline.event_tallies (stage, event_type, code, bucket_le, n, chunks, seconds_sum)
SELECT e.stage, e.event_type, coalesce(e.payload->>'code', ''),
       upload_pipeline.searchable_bucket(w.seconds), count(*),
       coalesce(sum(CASE WHEN e.event_type = 'completed' THEN (e.payload->>'chunks')::bigint END), 0),
       coalesce(sum(w.seconds), 0)
FROM upload_pipeline.events e
LEFT JOIN upload_pipeline.upload_jobs j ON e.event_type = 'completed' AND j.job_id = e.job_id
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM e.created_at - j.registered_at)::double precision AS seconds
) w
GROUP BY 1, 2, 3, 4;

-- One row per stage run of a batch: how long it took and its report's counters (tokens,
-- cache hits, pages...). Insert-only, one row per stage per batch.
CREATE TABLE upload_pipeline.stage_runs (
    run_row_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stage       text             NOT NULL,
    batch_key   text,
    seconds     double precision NOT NULL CHECK (seconds >= 0),
    documents   integer          NOT NULL DEFAULT 0,
    counters    jsonb            NOT NULL DEFAULT '{}'::jsonb,
    recorded_at timestamptz      NOT NULL DEFAULT now()
);

-- One row per provider client (a stage run's parser or embedder): its requests by outcome,
-- its retries and whether its circuit breaker opened. Insert-only.
CREATE TABLE upload_pipeline.provider_runs (
    provider_row_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service         text        NOT NULL,
    outcomes        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    retries         integer     NOT NULL DEFAULT 0 CHECK (retries >= 0),
    breaker_open    boolean     NOT NULL DEFAULT false,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_runs_service_idx ON upload_pipeline.provider_runs (service, provider_row_id DESC);

-- The health sensor's last probe of each service.
CREATE TABLE upload_pipeline.service_health (
    service         text PRIMARY KEY,
    ok              boolean          NOT NULL,
    latency_seconds double precision NOT NULL,
    checked_at      timestamptz      NOT NULL DEFAULT now()
);

-- Searchable rows per vector space, kept as insert-only deltas by statement triggers on
-- document_chunks (a commit, a deletion, a backfill each add a row or two): a scrape sums a
-- few rows per batch instead of counting every chunk.
CREATE TABLE upload_pipeline.space_row_tallies (
    tally_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    embedding_model text        NOT NULL,
    dims            integer     NOT NULL,
    delta           bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION upload_pipeline.tally_chunks_added() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO upload_pipeline.space_row_tallies (embedding_model, dims, delta)
    SELECT embedding_model, dims, count(*) FROM new_chunks GROUP BY 1, 2;
    RETURN NULL;
END;
$$;
CREATE FUNCTION upload_pipeline.tally_chunks_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO upload_pipeline.space_row_tallies (embedding_model, dims, delta)
    SELECT embedding_model, dims, -count(*) FROM old_chunks GROUP BY 1, 2;
    RETURN NULL;
END;
$$;
CREATE TRIGGER document_chunks_tally_insert
    AFTER INSERT ON upload_pipeline.document_chunks
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION upload_pipeline.tally_chunks_added();
CREATE TRIGGER document_chunks_tally_delete
    AFTER DELETE ON upload_pipeline.document_chunks
    REFERENCING OLD TABLE AS old_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION upload_pipeline.tally_chunks_removed();

INSERT INTO upload_pipeline.space_row_tallies (embedding_model, dims, delta)
SELECT embedding_model, dims, count(*) FROM upload_pipeline.document_chunks GROUP BY 1, 2;
