"""The cryomesh site agent: enrolls with the hub, reports capacity, dials out only."""
