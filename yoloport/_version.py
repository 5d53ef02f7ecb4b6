"""The package version (in its own module so that any room can read it without importing the package's face), and
the versions of the packages a result was measured with."""
__version__ = "0.1.0"


def package_version(module: str) -> str | None:
    """The version of an installed package without importing it (a loaded module's ``__version__`` when it
    is already imported), or None when it is not installed: recording torch's version must not load torch."""
    import sys
    from importlib import metadata

    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None
