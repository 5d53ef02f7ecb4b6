"""Calling rknn-toolkit2 quietly: its prints go to a log, its failures become one clear error."""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile

import numpy as np

from ...errors import DependencyMissing, YoloportError


def _import_rknn():
    try:
        from rknn.api import RKNN
    except ImportError:
        raise DependencyMissing(
            "rknn-toolkit2", "the rknn backend",
            "install rknn-toolkit2 from Rockchip's wheels (https://github.com/airockchip/rknn-toolkit2)",
        ) from None
    return RKNN


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ToolkitLog:
    """Everything the toolkit printed while quieted (ANSI colours removed)."""

    def __init__(self):
        self.text = ""

    def errors(self) -> list[str]:
        """The toolkit's error lines (``E ...``), without the prefix."""
        out = []
        for line in self.text.splitlines():
            s = line.strip()
            if s.startswith("E "):
                out.append(s[2:].strip())
        return out


@contextlib.contextmanager
def quiet(log: ToolkitLog | None = None):
    """Silence the toolkit: Python-level and file-descriptor-level stdout/stderr go to ``log``."""
    log = log if log is not None else ToolkitLog()
    buf = io.StringIO()
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    tmp = tempfile.TemporaryFile(mode="w+b")
    saved = []
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:
                pass
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield log
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        for fd, old in saved:
            os.dup2(old, fd)
            os.close(old)
        tmp.seek(0)
        text = buf.getvalue() + tmp.read().decode("utf-8", "replace")
        tmp.close()
        log.text += _ANSI.sub("", text.replace("\r", "\n"))


def call(step: str, fn, *args, log: ToolkitLog | None = None, **kwargs):
    """Run one toolkit call quietly; a non-zero return code or an exception becomes a YoloportError
    naming ``step`` and the toolkit's own error lines. Returns the call's result."""
    log = log if log is not None else ToolkitLog()
    start = len(log.text)
    try:
        with quiet(log):
            ret = fn(*args, **kwargs)
    except Exception as e:  # the toolkit raises ValueError etc. with its own traceback text
        msg = _last_error(log, start) or str(e).strip().splitlines()[-1]
        raise YoloportError(f"rknn {step} failed: {msg}") from None
    if isinstance(ret, (int, np.integer)) and ret != 0:
        raise YoloportError(f"rknn {step} failed (return code {int(ret)}): {_last_error(log, start) or 'no message from the toolkit'}")
    if ret is None and step == "inference":
        raise YoloportError(f"rknn {step} failed: {_last_error(log, start) or 'no outputs'}")
    return ret


def _last_error(log: ToolkitLog, start: int) -> str:
    """The toolkit's root-cause error line since ``start`` (tracebacks and banners skipped)."""
    sub = ToolkitLog()
    sub.text = log.text[start:]
    errs = [e for e in sub.errors() if not e.endswith("Traceback (most recent call last):") and "rknn-toolkit2 version" not in e]
    return errs[0] if errs else ""


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
