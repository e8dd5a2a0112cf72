-- Bulk loads and the HNSW index of a vector space.
--
-- Inserting rows one by one into an HNSW graph is several times slower than building the
-- graph once after loading (docs/ARCHITECTURE.md, "The HNSW index"). When a commit brings many rows compared
-- with what a space's index already holds, the pipeline drops the space's partial index,
-- commits the documents (each still swapped atomically) and builds the index again in one
-- pass. Search stays correct meanwhile (an exact scan instead of the index), only slower.
--
-- index_state records where a space stands, so that a crash between the drop and the
-- rebuild is repaired by the next commit instead of leaving the space without an index:
--   ready       the index exists (created on first use, rebuilt if it went missing)
--   rebuilding  dropped for a bulk load; rebuilt once no batch is in flight any more
--   off         no HNSW index by choice: search always scans exactly
ALTER TABLE upload_pipeline.vector_spaces
    ADD COLUMN index_state text NOT NULL DEFAULT 'ready'
        CHECK (index_state IN ('ready', 'rebuilding', 'off')),
    ADD COLUMN index_built_at timestamptz;
