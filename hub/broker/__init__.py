"""The broker: which site runs a job, and why (or why not yet)."""
