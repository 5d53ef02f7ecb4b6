"""Atomic file writes (no torch: the light runtime install writes its results through them).

Every write goes through :func:`atomic_path` / :func:`atomic_write`: the bytes land in a temporary
file next to the target, are fsync'ed, and only then ``os.replace`` the target, so a crash or an
exception mid-write leaves the previous file untouched and no temporary behind.
:mod:`yoloport.io.checkpoint` re-exports both.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from yoloport.errors import YoloportError


def _temp_sibling(path: Path) -> Path:
    """A fresh hidden name in ``path``'s directory that keeps ``path``'s suffix (writers such as
    OpenCV choose the encoder by extension)."""
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:12]}{path.suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; silently skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit, move it onto ``path`` atomically.

    The caller writes the whole file to the yielded path (``onnx.save(model, tmp)``,
    ``torch.save(obj, tmp)``, ``cv2.imwrite(str(tmp), im)``...). When the ``with`` block ends
    without an exception the temporary file is fsync'ed and ``os.replace``'d onto ``path`` (the
    directory is fsync'ed too). When the block raises, the temporary file is removed and
    ``path`` is left exactly as it was. Missing parent directories are created.

    The temporary name is ``.<stem>.tmp-<random><suffix>`` in the same directory (same file
    system, so the rename is atomic). Writers that add side files (e.g. ONNX external data)
    must put them elsewhere themselves.
    """
    target = Path(path)
    if target.is_dir():
        raise YoloportError(f"cannot write {target}: it is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target)
    try:
        yield tmp
        if not tmp.is_file():
            raise RuntimeError(f"atomic_path({target}): the writer did not create {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], Any]) -> Path:
    """Write ``path`` atomically: ``write_fn(f)`` gets a binary file open for writing.

    ``atomic_write(p, lambda f: f.write(data))``. See :func:`atomic_path` for the guarantees.
    Returns ``Path(path)``.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "xb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    return target
