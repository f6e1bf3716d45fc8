"""Site agents: enrollment with double opt-in, key rotation, revocation."""
