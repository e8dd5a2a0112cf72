-- Hybrid search: full text beside the vectors, one SQL search function with filters, the
-- provenance of every chunk, and an active vector space per embedding model.
--
-- upload_pipeline.search(...) is THE search: the CLI, the HTTP API and any application
-- call it from SQL. Modes: 'vector' (cosine over the space's HNSW index), 'text'
-- (tsvector + GIN), 'hybrid' (reciprocal rank fusion of both lists).

-- --- provenance: character offsets of a chunk in its parsed document ---------------------
-- The buffer always had them; the searchable table kept only the heading path. A trigger
-- copies them from the buffer row of the same chunk at commit (the commit INSERT selects
-- from the buffer in the same transaction), so the commit statement itself is unchanged.
-- Chunks committed before this migration keep NULL offsets until their next commit.
ALTER TABLE upload_pipeline.document_chunks
    ADD COLUMN char_start integer,
    ADD COLUMN char_end integer;

CREATE FUNCTION upload_pipeline.document_chunks_offsets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.char_start IS NULL THEN
        SELECT b.char_start, b.char_end INTO NEW.char_start, NEW.char_end
        FROM upload_pipeline.document_chunk_buffer b WHERE b.chunk_id = NEW.chunk_id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER document_chunks_offsets
    BEFORE INSERT ON upload_pipeline.document_chunks
    FOR EACH ROW EXECUTE FUNCTION upload_pipeline.document_chunks_offsets();

-- --- one chunk, several spaces ------------------------------------------------------------
-- A chunk's id derives from its document, version and index, not from the model: the same
-- chunk lives once per vector space (a backfill of a new space writes the same ids).
ALTER TABLE upload_pipeline.document_chunks DROP CONSTRAINT document_chunks_pkey;
ALTER TABLE upload_pipeline.document_chunks ADD PRIMARY KEY (chunk_id, embedding_model, dims);

-- --- full text -----------------------------------------------------------------------------
-- The text search configuration (language) is a setting: one row, changed with
-- set_search_language(), which rebuilds the generated column and its GIN index. A name
-- Postgres does not know falls back to 'simple' (no stemming, no stop words).
CREATE TABLE upload_pipeline.search_settings (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    language   regconfig   NOT NULL DEFAULT 'simple',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Headings count as text of the chunk (weight A, the body weight B).
CREATE FUNCTION upload_pipeline.chunk_tsvector(cfg regconfig, heading_path text[], content text)
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector(cfg, coalesce(array_to_string(heading_path, ' '), '')), 'A')
        || setweight(to_tsvector(cfg, content), 'B')
$$;

CREATE FUNCTION upload_pipeline.set_search_language(requested text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig;
    current_cfg regconfig;
BEGIN
    SELECT c.oid::regconfig INTO cfg FROM pg_ts_config c
    WHERE c.cfgname = lower(btrim(coalesce(requested, ''))) LIMIT 1;
    IF cfg IS NULL THEN
        cfg := 'simple'::regconfig;
    END IF;
    SELECT language INTO current_cfg FROM upload_pipeline.search_settings FOR UPDATE;
    IF current_cfg IS NOT DISTINCT FROM cfg
       AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'upload_pipeline.document_chunks'::regclass
                   AND attname = 'search_tsv' AND NOT attisdropped) THEN
        RETURN cfg::text;
    END IF;
    ALTER TABLE upload_pipeline.document_chunks DROP COLUMN IF EXISTS search_tsv;
    EXECUTE format(
        'ALTER TABLE upload_pipeline.document_chunks ADD COLUMN search_tsv tsvector'
        ' GENERATED ALWAYS AS (upload_pipeline.chunk_tsvector(%L::regconfig, heading_path, content)) STORED',
        cfg::text);
    CREATE INDEX document_chunks_search_tsv_idx ON upload_pipeline.document_chunks USING gin (search_tsv);
    INSERT INTO upload_pipeline.search_settings (language, updated_at) VALUES (cfg, now())
    ON CONFLICT (singleton) DO UPDATE SET language = EXCLUDED.language, updated_at = now();
    RETURN cfg::text;
END;
$$;

INSERT INTO upload_pipeline.search_settings (language) VALUES ('english');
SELECT upload_pipeline.set_search_language('english');

-- Prefix filters (storage_key LIKE 'docs/%') use this when they are selective.
CREATE INDEX document_chunks_key_prefix_idx
    ON upload_pipeline.document_chunks (storage_key text_pattern_ops);
CREATE INDEX document_chunks_committed_idx ON upload_pipeline.document_chunks (committed_at);

-- --- the active vector space ---------------------------------------------------------------
-- Search reads one space: the active one. A new model or dimension fills a new space while
-- search stays on the old one; activation (one transaction) is recorded in space_events.
ALTER TABLE upload_pipeline.vector_spaces
    ADD COLUMN is_active boolean NOT NULL DEFAULT false,
    ADD COLUMN activated_at timestamptz;
CREATE UNIQUE INDEX vector_spaces_one_active ON upload_pipeline.vector_spaces (is_active)
    WHERE is_active;

CREATE TABLE upload_pipeline.space_events (
    event_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    embedding_model text        NOT NULL,
    dims            integer     NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER space_events_append_only
    BEFORE UPDATE OR DELETE ON upload_pipeline.space_events
    FOR EACH ROW EXECUTE FUNCTION upload_pipeline.events_append_only();

-- An existing database: the oldest space holding vectors is the one search has been using.
UPDATE upload_pipeline.vector_spaces s SET is_active = true, activated_at = now()
WHERE (s.embedding_model, s.dims) = (
    SELECT v.embedding_model, v.dims FROM upload_pipeline.vector_spaces v
    WHERE EXISTS (SELECT 1 FROM upload_pipeline.document_chunks c
                  WHERE c.embedding_model = v.embedding_model AND c.dims = v.dims)
    ORDER BY v.created_at, v.embedding_model, v.dims LIMIT 1);

-- The space search reads when none is named: the active one; with none active (a fresh
-- database before its first activation), the oldest space that holds vectors.
CREATE FUNCTION upload_pipeline.search_space(
    OUT embedding_model text, OUT dims integer, OUT vector_type text, OUT is_active boolean)
LANGUAGE sql STABLE AS $$
    (SELECT s.embedding_model, s.dims, s.vector_type, s.is_active
     FROM upload_pipeline.vector_spaces s WHERE s.is_active)
    UNION ALL
    (SELECT s.embedding_model, s.dims, s.vector_type, s.is_active
     FROM upload_pipeline.vector_spaces s
     WHERE EXISTS (SELECT 1 FROM upload_pipeline.document_chunks c
                   WHERE c.embedding_model = s.embedding_model AND c.dims = s.dims)
     ORDER BY s.created_at, s.embedding_model, s.dims)
    LIMIT 1
$$;

-- --- the search function ----------------------------------------------------------------------
-- Filters narrow the candidates inside the index scan. With pgvector >= 0.8 the HNSW scan
-- is iterative (hnsw.iterative_scan = relaxed_order, set for the function only), so a
-- filtered top-k still returns k rows when k matching rows exist; the relaxed order is
-- re-sorted by exact distance. ef_search NULL keeps pgvector's default (40).
--
-- Text queries with operators use websearch syntax ("quoted phrase", -excluded, or). A
-- query of plain words matches chunks containing ANY of its terms, ranked first by how many distinct query
-- terms a chunk contains, then by cover density (ts_rank_cd, scaled into [0, 1)): a long
-- query does not need every word in one chunk, and a chunk repeating one common term
-- ("license" x 20) does not outrank one containing all the rare ones.
CREATE FUNCTION upload_pipeline.search(
    query_text      text,
    query_vector    vector      DEFAULT NULL,
    k               integer     DEFAULT 10,
    mode            text        DEFAULT 'hybrid',
    key_prefix      text        DEFAULT NULL,
    media_types     text[]      DEFAULT NULL,
    document_ids    uuid[]      DEFAULT NULL,
    ingested_after  timestamptz DEFAULT NULL,
    ingested_before timestamptz DEFAULT NULL,
    ef_search       integer     DEFAULT NULL,
    space_model     text        DEFAULT NULL,
    space_dims      integer     DEFAULT NULL,
    candidates      integer     DEFAULT NULL,
    rrf_k           integer     DEFAULT 60
) RETURNS TABLE (
    rank            integer,
    score           double precision,
    vector_rank     integer,
    vector_distance double precision,
    text_rank       integer,
    text_score      double precision,
    chunk_id        uuid,
    document_id     uuid,
    job_id          uuid,
    storage_key     text,
    content_sha256  text,
    media_type      text,
    chunk_index     integer,
    heading_path    text[],
    char_start      integer,
    char_end        integer,
    content         text,
    committed_at    timestamptz,
    embedding_model text,
    dims            integer
)
LANGUAGE plpgsql
AS $fn$
DECLARE
    sp record;
    cfg regconfig;
    tsq tsquery;
    lexemes text[];
    coverage_sql text := '0';
    n_all bigint;
    lits text[];
    nlex integer;
    depth integer;
    vtype text;
    filters text := '';
    vec_sql text;
    txt_sql text;
    q text;
    saved_ef text := current_setting('hnsw.ef_search', true);
BEGIN
    IF mode IS NULL OR mode NOT IN ('vector', 'text', 'hybrid') THEN
        RAISE EXCEPTION 'search mode must be vector, text or hybrid, got %', coalesce(mode, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, got %', coalesce(k::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF mode IN ('vector', 'hybrid') AND query_vector IS NULL THEN
        RAISE EXCEPTION 'mode % needs query_vector (the query embedded with the space''s model)', mode
            USING ERRCODE = '22023';
    END IF;
    IF mode IN ('text', 'hybrid') AND coalesce(btrim(query_text), '') = '' THEN
        RAISE EXCEPTION 'mode % needs query_text', mode USING ERRCODE = '22023';
    END IF;
    IF ef_search IS NOT NULL THEN
        IF ef_search < 1 OR ef_search > 1000 THEN
            RAISE EXCEPTION 'ef_search must be between 1 and 1000, got %', ef_search
                USING ERRCODE = '22023';
        END IF;
        -- Restored after the query below: a per-call setting must not leak into the
        -- caller's transaction.
        PERFORM set_config('hnsw.ef_search', ef_search::text, true);
    END IF;

    IF space_model IS NULL THEN
        SELECT * INTO sp FROM upload_pipeline.search_space();
        IF sp.embedding_model IS NULL THEN
            RETURN;  -- nothing searchable yet
        END IF;
    ELSE
        SELECT s.embedding_model, s.dims, s.vector_type INTO sp FROM upload_pipeline.vector_spaces s
        WHERE s.embedding_model = space_model AND (space_dims IS NULL OR s.dims = space_dims)
        ORDER BY s.is_active DESC, s.created_at LIMIT 1;
        IF sp.embedding_model IS NULL THEN
            RAISE EXCEPTION 'no vector space %:%', space_model, coalesce(space_dims::text, '*')
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF query_vector IS NOT NULL AND vector_dims(query_vector) <> sp.dims THEN
        RAISE EXCEPTION 'query_vector has % dimensions, the space %:% has %',
            vector_dims(query_vector), sp.embedding_model, sp.dims, sp.dims USING ERRCODE = '22023';
    END IF;
    vtype := format('%s(%s)', sp.vector_type, sp.dims);
    -- How deep each list goes: k for vector alone; for fusion, deeper lists let a chunk
    -- ranked moderately in both lists rise above one ranked high in a single list.
    depth := CASE WHEN mode = 'vector' THEN k ELSE greatest(coalesce(candidates, 0), k * 4, 40) END;

    -- The space as literals so the planner matches the space's partial HNSW index.
    filters := format(' c.embedding_model = %L AND c.dims = %L', sp.embedding_model, sp.dims);
    IF key_prefix IS NOT NULL AND key_prefix <> '' THEN
        filters := filters || format(' AND c.storage_key LIKE %L',
            replace(replace(replace(key_prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%');
    END IF;
    IF media_types IS NOT NULL THEN
        filters := filters || ' AND c.job_id IN (SELECT j.job_id FROM upload_pipeline.upload_jobs j'
            || ' WHERE j.media_type = ANY($3))';
    END IF;
    IF document_ids IS NOT NULL THEN
        filters := filters || ' AND c.document_id = ANY($4)';
    END IF;
    IF ingested_after IS NOT NULL THEN
        filters := filters || ' AND c.committed_at >= $5';
    END IF;
    IF ingested_before IS NOT NULL THEN
        filters := filters || ' AND c.committed_at < $6';
    END IF;

    IF mode IN ('text', 'hybrid') THEN
        SELECT s.language INTO cfg FROM upload_pipeline.search_settings s;
        tsq := websearch_to_tsquery(coalesce(cfg, 'simple'::regconfig), query_text);
        lexemes := (tsvector_to_array(to_tsvector(coalesce(cfg, 'simple'::regconfig), query_text)))[1:32];
        lits := ARRAY(SELECT '''' || replace(replace(l, '\', '\\'), '''', '\''') || ''''
                      FROM unnest(lexemes) l);
        nlex := coalesce(cardinality(lexemes), 0);
        -- How many distinct query terms a chunk holds: one tsvector lookup per term (at
        -- most 32 terms), cheaper than intersecting lexeme arrays row by row.
        IF nlex > 0 THEN
            SELECT string_agg(format('(c.search_tsv @@ ($7)[%s])::int', i), ' + ')
            INTO coverage_sql FROM generate_series(1, nlex) i;
        END IF;
        -- Plain words rank by how many of the terms a chunk holds. Ranking every chunk that
        -- holds any term is costly when a term is frequent, so first try "at least m of the
        -- n terms" for m = n, n-1, n-2: when that already matches `depth` chunks, those are
        -- exactly the top of the any-term ranking (nothing else holds as many terms).
        IF query_text !~* '"|(^|\s)-|\mor\M' AND nlex > 0 THEN
            tsq := NULL;
            FOR m IN REVERSE nlex .. greatest(nlex - 2, 2) LOOP
                WITH RECURSIVE combo(idx) AS (
                    SELECT ARRAY[i] FROM generate_series(1, nlex) i
                    UNION ALL
                    SELECT combo.idx || j FROM combo, generate_series(1, nlex) j
                    WHERE j > combo.idx[cardinality(combo.idx)] AND cardinality(combo.idx) < m)
                SELECT string_agg('(' || array_to_string(
                           ARRAY(SELECT lits[x] FROM unnest(combo.idx) x), ' & ') || ')', ' | '),
                       count(*)
                INTO q, n_all FROM combo WHERE cardinality(combo.idx) = m;
                EXIT WHEN n_all > 64;  -- too many combinations: rank the any-term match
                EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM upload_pipeline.document_chunks c'
                    ' WHERE c.search_tsv @@ $1 AND %s LIMIT %s) x', filters, depth)
                    INTO n_all USING q::tsquery, NULL::tsquery, media_types, document_ids,
                    ingested_after, ingested_before;  -- the filters refer to $3..$6
                IF n_all >= depth THEN
                    tsq := q::tsquery;
                    EXIT;
                END IF;
            END LOOP;
            IF tsq IS NULL THEN
                tsq := array_to_string(lits, ' | ')::tsquery;
            END IF;
        END IF;
    END IF;

    vec_sql := format(
        'SELECT c.chunk_id, (c.embedding::%1$s <=> $1::%1$s)::float8 AS dist'
        ' FROM upload_pipeline.document_chunks c WHERE %2$s'
        ' ORDER BY c.embedding::%1$s <=> $1::%1$s LIMIT %3$s', vtype, filters, depth);
    txt_sql := format(
        'SELECT c.chunk_id, (%3$s + ts_rank_cd(c.search_tsv, $2, 32))::float8 AS trank'
        ' FROM upload_pipeline.document_chunks c WHERE c.search_tsv @@ $2 AND %1$s'
        ' ORDER BY trank DESC, c.chunk_id LIMIT %2$s', filters, depth, coverage_sql);

    IF mode = 'vector' THEN
        q := 'WITH v0 AS MATERIALIZED (' || vec_sql || '),'
          || ' v AS (SELECT chunk_id, dist, row_number() OVER (ORDER BY dist, chunk_id)::int AS r FROM v0),'
          || ' f AS (SELECT chunk_id, v.r AS vr, v.dist, NULL::int AS tr, NULL::float8 AS ts,'
          || '  (1 - v.dist)::float8 AS s FROM v)';
    ELSIF mode = 'text' THEN
        q := 'WITH t AS (SELECT chunk_id, trank, row_number() OVER (ORDER BY trank DESC, chunk_id)::int AS r'
          || ' FROM (' || txt_sql || ') t0),'
          || ' f AS (SELECT chunk_id, NULL::int AS vr, NULL::float8 AS dist, t.r AS tr, t.trank AS ts,'
          || '  t.trank AS s FROM t)';
    ELSE
        q := 'WITH v0 AS MATERIALIZED (' || vec_sql || '),'
          || ' v AS (SELECT chunk_id, dist, row_number() OVER (ORDER BY dist, chunk_id)::int AS r FROM v0),'
          || ' t AS (SELECT chunk_id, trank, row_number() OVER (ORDER BY trank DESC, chunk_id)::int AS r'
          || ' FROM (' || txt_sql || ') t0),'
          || ' f AS (SELECT coalesce(v.chunk_id, t.chunk_id) AS chunk_id, v.r AS vr, v.dist,'
          || '  t.r AS tr, t.trank AS ts,'
          || format('  (coalesce(1.0 / (%1$s + v.r), 0) + coalesce(1.0 / (%1$s + t.r), 0))::float8 AS s',
                    greatest(coalesce(rrf_k, 60), 1))
          || '  FROM v FULL JOIN t ON t.chunk_id = v.chunk_id)';
    END IF;
    q := q || ' SELECT (row_number() OVER (ORDER BY f.s DESC, f.vr NULLS LAST, f.tr NULLS LAST, f.chunk_id))::int,'
           || ' f.s, f.vr, f.dist, f.tr, f.ts, c.chunk_id, c.document_id, c.job_id, c.storage_key,'
           || ' c.content_sha256, j.media_type, c.chunk_index, c.heading_path, c.char_start, c.char_end,'
           || ' c.content, c.committed_at, c.embedding_model, c.dims'
           || ' FROM f JOIN upload_pipeline.document_chunks c ON c.chunk_id = f.chunk_id AND'
           || format(' c.embedding_model = %L AND c.dims = %L', sp.embedding_model, sp.dims)
           || ' JOIN upload_pipeline.upload_jobs j ON j.job_id = c.job_id'
           || ' ORDER BY f.s DESC, f.vr NULLS LAST, f.tr NULLS LAST, f.chunk_id LIMIT ' || k;
    RETURN QUERY EXECUTE q USING query_vector, tsq, media_types, document_ids,
        ingested_after, ingested_before, lits::tsquery[];
    IF ef_search IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', coalesce(saved_ef, '40'), true);
    END IF;
END;
$fn$;

-- The iterative scan exists from pgvector 0.8 on (older versions refuse the setting): set
-- for this function only, so callers' sessions keep their own hnsw.* settings.
DO $$
BEGIN
    IF (SELECT string_to_array(split_part(extversion, '-', 1), '.')::int[] >= '{0,8}'
        FROM pg_extension WHERE extname = 'vector') THEN
        ALTER FUNCTION upload_pipeline.search(text, vector, integer, text, text, text[], uuid[],
            timestamptz, timestamptz, integer, text, integer, integer, integer)
            SET hnsw.iterative_scan = 'relaxed_order';
    END IF;
END;
$$;

COMMENT ON FUNCTION upload_pipeline.search IS
    'Top-k chunks of one vector space: mode vector | text | hybrid (RRF), filters by key prefix,'
    ' media type, document ids and commit time; see sql/0005_hybrid_search.sql.';
