-- What the Prometheus exporter reads (docpipe_dagster/store/metrics.py, docs/OPERATIONS.md).
--
-- The work happens in many short-lived run processes, so every number a scrape shows comes
-- from the database. A scrape must stay cheap however many documents there are: counters
-- are kept in small insert-only tables written as the pipeline goes, never counted from the
-- jobs, events or chunks at scrape time. Their rows grow with the batches; the exporter folds
-- them into one row per group when they grow past a bound (store/metrics.py: fold_tallies),
-- in one transaction, so a scrape reads a bounded number of rows at any scale.

-- Document versions by state (and, for failures, stage, code and whether a retry is
-- scheduled), kept as insert-only deltas by statement triggers on upload_jobs: each statement
-- that moves jobs adds a row or two, concurrent runs never wait on a shared counter row, and
-- a scrape sums a few rows per batch instead of reading every job.
CREATE TABLE upload_pipeline.job_state_tallies (
    tally_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state        text        NOT NULL,
    failed_stage text        NOT NULL DEFAULT '',
    code         text        NOT NULL DEFAULT '',
    retrying     boolean     NOT NULL DEFAULT false,
    delta        bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION upload_pipeline.tally_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO upload_pipeline.job_state_tallies (state, failed_stage, code, retrying, delta)
        SELECT state, coalesce(failed_stage, ''), coalesce(failure_code, ''),
               coalesce(retryable AND next_attempt_at IS NOT NULL, false), count(*)
        FROM new_jobs GROUP BY 1, 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO upload_pipeline.job_state_tallies (state, failed_stage, code, retrying, delta)
        SELECT state, coalesce(failed_stage, ''), coalesce(failure_code, ''),
               coalesce(retryable AND next_attempt_at IS NOT NULL, false), -count(*)
        FROM old_jobs GROUP BY 1, 2, 3, 4;
    ELSE
        -- Only what changed: an update that keeps the state (a re-batch) adds nothing.
        INSERT INTO upload_pipeline.job_state_tallies (state, failed_stage, code, retrying, delta)
        SELECT state, failed_stage, code, retrying, sum(d) FROM (
            SELECT state, coalesce(failed_stage, '') AS failed_stage,
                   coalesce(failure_code, '') AS code,
                   coalesce(retryable AND next_attempt_at IS NOT NULL, false) AS retrying,
                   1 AS d
            FROM new_jobs
            UNION ALL
            SELECT state, coalesce(failed_stage, ''), coalesce(failure_code, ''),
                   coalesce(retryable AND next_attempt_at IS NOT NULL, false), -1
            FROM old_jobs) c
        GROUP BY 1, 2, 3, 4 HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER upload_jobs_tally_insert
    AFTER INSERT ON upload_pipeline.upload_jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION upload_pipeline.tally_jobs();
CREATE TRIGGER upload_jobs_tally_update
    AFTER UPDATE ON upload_pipeline.upload_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION upload_pipeline.tally_jobs();
CREATE TRIGGER upload_jobs_tally_delete
    AFTER DELETE ON upload_pipeline.upload_jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION upload_pipeline.tally_jobs();

INSERT INTO upload_pipeline.job_state_tallies (state, failed_stage, code, retrying, delta)
SELECT state, coalesce(failed_stage, ''), coalesce(failure_code, ''),
       coalesce(retryable AND next_attempt_at IS NOT NULL, false), count(*)
FROM upload_pipeline.upload_jobs GROUP BY 1, 2, 3, 4;

-- The backlog's oldest registration without reading every waiting row.
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
    bucket_le   double precision NOT NULL,  -- the histogram bucket of `seconds` (the exporter's bounds)
    documents   integer          NOT NULL DEFAULT 0,
    counters    jsonb            NOT NULL DEFAULT '{}'::jsonb,
    runs        integer          NOT NULL DEFAULT 1 CHECK (runs > 0),  -- > 1: folded rows
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
    folded          boolean     NOT NULL DEFAULT false,  -- several runs' totals, no breaker state
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_runs_latest_idx
    ON upload_pipeline.provider_runs (service, provider_row_id DESC) WHERE NOT folded;

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
