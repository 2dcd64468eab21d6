"""Orchestrator: public API, workflows, registry, router and retrieval."""
