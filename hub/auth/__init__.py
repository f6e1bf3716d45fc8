"""OAuth 2.0: the hub as authorization server and resource server."""
