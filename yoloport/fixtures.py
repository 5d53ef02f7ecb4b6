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
