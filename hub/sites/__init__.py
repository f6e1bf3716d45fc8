"""The facility registry."""
