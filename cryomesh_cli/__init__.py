"""The ``cryomesh`` command line."""
