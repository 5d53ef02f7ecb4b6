"""Output locations that never overwrite what a user already has."""
from __future__ import annotations

import re
from pathlib import Path


def increment_path(path, exist_ok: bool = False, mkdir: bool = True) -> Path:
    """``runs/detect/exp`` -> ``runs/detect/exp2`` (3, ...) when it exists, unless ``exist_ok``."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem = re.sub(r"\d+$", "", path.name) or path.name
        n = 2
        while (path.parent / f"{stem}{n}").exists():
            n += 1
        path = path.parent / f"{stem}{n}"
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` via a temp file + rename, so a reader never sees half a file."""
    from .checkpoint import atomic_write

    return atomic_write(path, lambda f: f.write(text.encode()))


def json_output_path(json_arg, project, name, filename: str) -> Path:
    """Where a command writes its JSON: ``--json FILE`` when given (a folder is refused), else
    ``<project>/<name>N/<filename>`` in a new run folder."""
    from ..errors import YoloportError

    if json_arg:
        p = Path(json_arg)
        if p.is_dir():
            raise YoloportError(f"--json {p} is a directory; give a file name")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
    return increment_path(Path(project) / name) / filename
