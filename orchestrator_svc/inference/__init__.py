"""Inference: the public Generate API, the durable InferenceWorkflow, model selection and prompt grounding."""
