"""Model container: ModelService over a llama.cpp engine, plus the Temporal worker that calls it."""
