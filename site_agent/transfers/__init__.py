"""Moving dataset copies between sites through an exchange store."""
