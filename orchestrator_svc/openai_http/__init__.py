"""The OpenAI-compatible HTTP facade: OpenAI clients reach the same InferenceService as the gRPC API."""
