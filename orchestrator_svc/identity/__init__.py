"""Who is calling: API keys, the tenants they belong to, and the registration credential of the control plane."""
