"""Layer 4: one module per checkpoint format, all mapping through the key table in :mod:`.keys`."""
