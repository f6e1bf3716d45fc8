"""Code shared by the hub and the site agent: wire schemas and small helpers.

Nothing in this package imports ``hub`` or ``site_agent``.
"""
