"""Beside the formats: the Flax Mixer as Google wrote it, the oracle every conversion is checked against."""
