-- Runs once, when the Postgres volume is first initialised: the orchestrator's database beside Temporal's.
CREATE DATABASE llmorch;
