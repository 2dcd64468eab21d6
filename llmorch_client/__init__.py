"""Python client of the public API: the typed client, the CLI and the demo corpus."""
