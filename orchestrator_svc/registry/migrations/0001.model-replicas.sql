-- The registry's one table, the same on SQLite and PostgreSQL. IF NOT EXISTS adopts a registry.db written before
-- migrations existed. Metadata is JSON of the domain record: only orchestrator_svc/registry reads this table.
CREATE TABLE IF NOT EXISTS model_replicas (
    model_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    metadata TEXT NOT NULL,
    registered_seq BIGINT NOT NULL,
    PRIMARY KEY (model_id, endpoint)
);
