"""Where the shared test fixtures live (real weights, images, COCO128). Never copied into the repo."""
from __future__ import annotations

import os
from pathlib import Path


def fixtures_dir() -> Path | None:
    """``$YOLOPORT_FIXTURES`` or ``../shared/fixtures`` next to the repository, if it exists."""
    env = os.environ.get("YOLOPORT_FIXTURES")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo.parent / "shared" / "fixtures", Path.cwd().parent / "shared" / "fixtures"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def weights_path(name) -> Path:
    """``name`` as a checkpoint path: an existing file, or a key of the model registry (the bundled one names
    the fixtures' official weights: ``yolov5s-v5.0``, ``yolov5n-v6.1``) whose weights file exists. A
    YoloportError otherwise (benchmarks and scripts: one lookup for "a path or a fixture's name")."""
    from .config import lookup_model_key
    from .errors import YoloportError

    p = Path(str(name)).expanduser()
    if p.is_file():
        return p
    entry = lookup_model_key(str(name), required=False)
    if entry is not None and entry.weights and Path(entry.weights).is_file():
        return Path(entry.weights)
    raise YoloportError(f"weights {name!r} not found: neither a file nor a model key whose weights exist "
                        f"(the fixtures' keys need {fixtures_dir() or '../shared/fixtures'})")
