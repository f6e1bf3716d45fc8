"""Wire schemas: the JSON bodies the hub and agents exchange (plain Pydantic)."""
