"""The model registry: registrations, live health and load, and the internal RegistryService."""
