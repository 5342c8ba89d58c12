"""The package version (one place; read by the package, the saved adapters and the exports)."""
__version__ = "0.1.0"
