-- What a key may do (issue 15): its default priority class, its fairness weight and its rate limits (0: none), and
-- the usage those limits are counted against, shared by every API replica through this database.
ALTER TABLE api_keys ADD COLUMN default_class TEXT NOT NULL DEFAULT 'interactive';
ALTER TABLE api_keys ADD COLUMN fairness_weight DOUBLE PRECISION NOT NULL DEFAULT 1.0;
ALTER TABLE api_keys ADD COLUMN requests_per_minute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN tokens_per_minute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN max_concurrent BIGINT NOT NULL DEFAULT 0;
-- One row per key and minute: requests admitted and tokens charged in it.
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (key_id, minute)
);
-- One row per request in flight; a lease outlives a crashed replica only until it expires.
CREATE TABLE IF NOT EXISTS key_leases (
    lease_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
