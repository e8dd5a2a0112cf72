-- Page ranges of chunks: the first and last page (1-based) of the parsed document a chunk's
-- text came from. NULL when the parser gave no pages (one page, a format without pages) or
-- when the page separators in the parsed text do not match its page count: never guessed.
-- The chunk stage computes them (docpipe_dagster/core/pages.py) and stages them in the
-- buffer; at commit the offsets trigger of 0005, replaced here, copies them with the offsets.
-- Chunks committed before this migration keep NULL pages until their next commit.
ALTER TABLE upload_pipeline.document_chunk_buffer
    ADD COLUMN page_start integer,
    ADD COLUMN page_end integer,
    ADD CONSTRAINT document_chunk_buffer_pages_check CHECK (
        (page_start IS NULL) = (page_end IS NULL) AND 1 <= page_start AND page_start <= page_end);

ALTER TABLE upload_pipeline.document_chunks
    ADD COLUMN page_start integer,
    ADD COLUMN page_end integer;

-- The commit INSERT names neither offsets nor pages: both come from the buffer row of the
-- same chunk. A backfill into another space names them all (copied from the chunk's row in
-- the source space), so nothing is looked up.
CREATE OR REPLACE FUNCTION upload_pipeline.document_chunks_offsets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.char_start IS NULL THEN
        SELECT b.char_start, b.char_end, b.page_start, b.page_end
        INTO NEW.char_start, NEW.char_end, NEW.page_start, NEW.page_end
        FROM upload_pipeline.document_chunk_buffer b WHERE b.chunk_id = NEW.chunk_id;
    END IF;
    RETURN NEW;
END;
$$;
