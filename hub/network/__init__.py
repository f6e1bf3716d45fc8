"""The network view."""
