"""Pieces every service of the platform shares: constants, errors, gRPC server plumbing, metrics."""
