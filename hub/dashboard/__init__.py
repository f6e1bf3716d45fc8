"""The coordinator's dashboard: its API and the web page the hub serves at /dashboard."""
