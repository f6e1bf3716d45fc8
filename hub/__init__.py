"""The cryomesh hub: registry, OAuth 2.0 authorization server, capacity and network views."""
