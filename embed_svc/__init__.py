"""Embedding container: EmbeddingService over llama.cpp, plus the Temporal worker that calls it."""
