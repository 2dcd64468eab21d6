"""Retrieval: collections, durable ingestion, vector stores and the public RetrievalService."""
