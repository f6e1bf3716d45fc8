"""Federated jobs: submission, attempts under leases, reports, cancel, usage."""
