"""The package version, apart from ``__init__`` so that every layer can read it without importing the zoo."""
__version__ = "0.1.0"
