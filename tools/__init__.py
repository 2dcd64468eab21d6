"""Developer tools: code generation, model conversion, the local launcher and benchmarks."""
