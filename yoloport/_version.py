"""The package version, in its own module so that any room can read it without importing the package's face."""
__version__ = "0.1.0"
