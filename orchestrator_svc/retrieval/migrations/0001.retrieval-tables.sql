-- Retrieval state that no pod owns (ADR 0011): collections, chunks with their vectors, and the documents an
-- ingestion stages (its claim check), in the cluster's PostgreSQL. Used when ORCH_VECTOR_STORE=postgres.
-- `version` changes with every write to a collection, so each pod's in-memory matrix knows when it is stale.
CREATE TABLE IF NOT EXISTS vector_collections (
    name TEXT PRIMARY KEY,
    dimension INTEGER NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vector_chunks (
    collection TEXT NOT NULL REFERENCES vector_collections (name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BYTEA NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX IF NOT EXISTS vector_chunks_by_document ON vector_chunks (collection, document_id);
CREATE TABLE IF NOT EXISTS staged_documents (
    ingestion_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (ingestion_id, document_id)
);
