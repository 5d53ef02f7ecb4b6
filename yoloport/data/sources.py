"""Where detect reads images from: an image file, a directory, a glob or a video file."""
from __future__ import annotations

import glob as globlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import YoloportError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpeg", ".mpg", ".webm", ".gif", ".ts"}


@dataclass
class Frame:
    """One image to detect on: ``path`` (file), ``frame`` index for videos (None for images)."""

    path: Path
    image: np.ndarray  # BGR HWC uint8
    frame: int | None = None
    n_frames: int | None = None

    @property
    def stem(self) -> str:
        return self.path.stem if self.frame is None else f"{self.path.stem}_{self.frame}"


def resolve_source(source) -> list[Path]:
    """Files named by ``source`` (file, directory, glob), images and videos, sorted."""
    s = str(source)
    p = Path(s).expanduser()
    if any(ch in s for ch in "*?["):
        files = sorted(Path(f) for f in globlib.glob(s, recursive=True))
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
    elif p.is_file():
        files = [p]
    else:
        raise YoloportError(f"source {s} does not exist")
    media = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    if not media:
        raise YoloportError(
            f"source {s} has no images or videos (image types: {', '.join(sorted(IMAGE_SUFFIXES))}; "
            f"videos: {', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return media


def read_image(path) -> np.ndarray | None:
    """BGR uint8 HWC image (EXIF orientation applied, as ``cv2.imread``), or None when the file cannot
    be decoded. Paths ``imread`` cannot open (e.g. non-ASCII on some platforms) are decoded from bytes."""
    try:
        im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        im = None
    if im is not None and im.size:
        return im
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def require_image(path, what: str = "image") -> np.ndarray:
    """:func:`read_image`, or a YoloportError ``cannot read <what>: <path>``."""
    im = read_image(path)
    if im is None:
        raise YoloportError(f"cannot read {what}: {path}")
    return im


def iter_frames(files: list[Path], skipped: list[str] | None = None, vid_stride: int = 1) -> Iterator[Frame]:
    """Yield every image and every ``vid_stride``-th video frame; unreadable files go to ``skipped``."""
    for f in files:
        if f.suffix.lower() in VIDEO_SUFFIXES:
            cap = cv2.VideoCapture(str(f))
            if not cap.isOpened():
                if skipped is not None:
                    skipped.append(f"{f}: cannot open video")
                continue
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            i = 0
            try:
                while True:
                    ok, im = cap.read()
                    if not ok:
                        break
                    if i % vid_stride == 0:
                        yield Frame(f, im, frame=i, n_frames=n)
                    i += 1
            finally:
                cap.release()
            if i == 0 and skipped is not None:
                skipped.append(f"{f}: no frames could be read")
        else:
            im = read_image(f)
            if im is None:
                if skipped is not None:
                    skipped.append(f"{f}: not a readable image")
                continue
            yield Frame(f, im)
