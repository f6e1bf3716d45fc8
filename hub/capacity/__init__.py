"""Heartbeats, capacity snapshots and their history, and the reachability sweep."""
