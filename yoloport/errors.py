"""The one exception type for mistakes a user can fix (bad path, bad label, unsupported op).

The CLI turns a :class:`YoloportError` into one line on stderr and a non-zero exit; anything else
is a bug in yoloport and keeps its traceback.
"""


class YoloportError(Exception):
    """A user-facing error: the message is the whole story, no traceback is shown."""

    exit_code = 2


class DependencyMissing(YoloportError):
    """An optional backend package is not installed; the message says how to install it."""

    def __init__(self, package: str, purpose: str, install: str | None = None):
        install = install or f"pip install {package}"
        super().__init__(f"{purpose} needs the Python package '{package}', which is not installed: {install}")
        self.package = package
