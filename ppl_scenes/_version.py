"""The package version, in a module of its own so that any part can stamp it without importing the root."""

__version__ = "0.1.0"
