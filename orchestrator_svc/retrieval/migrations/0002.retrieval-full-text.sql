-- Keyword search for the PostgreSQL store (ADR 0018): each chunk's English tsvector, kept by PostgreSQL itself as a
-- generated column, and a GIN index over it; existing rows get theirs when the column is added.
ALTER TABLE vector_chunks
    ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED;
CREATE INDEX IF NOT EXISTS vector_chunks_full_text ON vector_chunks USING GIN (tsv);
