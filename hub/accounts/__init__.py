"""Accounts for people and services (client-secret OAuth clients)."""
