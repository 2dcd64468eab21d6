-- depends: 0001.model-replicas
-- A counter bumped by every registration change, so an API replica that missed a notification (its listening
-- connection dropped, or SQLite, which has none) sees on its next poll that its cache is behind.
CREATE TABLE IF NOT EXISTS registry_version (
    id INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO registry_version (id, version) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM registry_version WHERE id = 1);
