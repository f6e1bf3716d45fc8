"""cryomesh."""
