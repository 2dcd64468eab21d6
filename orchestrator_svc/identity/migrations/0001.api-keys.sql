-- API keys, the same on SQLite and PostgreSQL. Only the scrypt hash of a key's secret is stored; the key itself is
-- shown once, when it is created. Only orchestrator_svc/identity reads this table.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
