"""Face labels in yolov5-face's YOLO layout: ``cls xc yc w h  x1 y1 ... xK yK`` (normalised), one face a line.

A face dataset is read as faces because the model has a landmark head (``nkpt > 0``) or the user
said ``--task face``, never because a file happens to have 15 columns (the shared detector reader
takes 15 columns as a 7-point polygon). With ``nkpt`` keypoints a line has exactly ``5 + 2 * nkpt``
values. A missing landmark is the pair ``-1 -1`` (WIDER FACE val labels have all of them missing).

**Bad lines are refused**, each reported as ``file:line: reason`` and left out (the rest of the file
is kept, as the detector reader does): a wrong number of values, a non-number, a class outside
``0..nc-1``, a box outside ``[0, 1]`` or of zero size, a landmark outside the image (a coordinate
outside ``[0, 1]`` that is not the missing pair ``-1 -1``), or a half-missing pair. This follows
yolov5-face's loader, which rejects such label files (its ``cache_labels`` asserts every value
is ``>= -1`` and every coordinate ``<= 1``, then ignores the image as corrupt): a landmark
outside the image is a labelling error, and clipping it would teach the model a wrong point.
Only the offending line is dropped here and the reason is said, which tells the user more.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import YoloportError

MISSING = -1.0  #: value of both coordinates of a missing landmark


def face_label_width(nkpt: int) -> int:
    """Values per face line: class, box (4), then ``nkpt`` x/y pairs."""
    return 5 + 2 * int(nkpt)


def parse_face_line(parts: list[str], nc: int, nkpt: int) -> tuple[np.ndarray | None, str | None]:
    """One label line split into ``parts`` -> ``(row float64 [5 + 2K], None)`` or ``(None, reason)``.

    ``row`` = ``(cls, xc, yc, w, h, x1, y1, ..., xK, yK)`` normalised, missing landmarks ``-1``."""
    width = face_label_width(nkpt)
    if len(parts) != width:
        return None, (f"a face label has {width} values (class, xc yc w h, {nkpt} landmark x/y pairs; -1 -1 "
                      f"for a missing one), got {len(parts)}")
    try:
        vals = np.array([float(v) for v in parts], dtype=np.float64)
    except ValueError:
        from .dataset import is_number

        return None, f"non-numeric value '{next(v for v in parts if not is_number(v))}'"
    if not np.isfinite(vals).all():
        return None, "non-finite value"
    c = vals[0]
    if c != int(c) or not 0 <= c < nc:
        return None, f"class {parts[0]} is not in 0..{nc - 1}"
    box = vals[1:5]
    if (box < 0).any() or (box > 1).any():
        return None, f"box outside the image (normalised xc yc w h must be in 0..1): {' '.join(parts[1:5])}"
    if box[2] <= 0 or box[3] <= 0:
        return None, f"zero or negative box size (w={box[2]:g}, h={box[3]:g})"
    pts = vals[5:].reshape(-1, 2)
    missing = pts == MISSING
    half = missing.any(1) & ~missing.all(1)
    if half.any():
        k = int(np.flatnonzero(half)[0])
        return None, f"landmark {k + 1} has one coordinate -1 (a missing landmark is -1 -1): {pts[k, 0]:g} {pts[k, 1]:g}"
    outside = ~missing.all(1) & ((pts < 0) | (pts > 1)).any(1)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        return None, (f"landmark {k + 1} ({pts[k, 0]:g}, {pts[k, 1]:g}) is outside the image (normalised x y must "
                      "be in 0..1, or -1 -1 when missing)")
    return vals, None


def read_face_labels(txt: str | os.PathLike, nc: int, nkpt: int, dtype=np.float32) -> tuple[np.ndarray, list[str]]:
    """A face label file -> ``(labels [n, 5 + 2K] of dtype, problems)``; see the module docstring.

    Each bad line is left out and reported as ``"file:line: reason"``. A missing file is a
    YoloportError; an empty file gives ``[0, 5 + 2K]``. ``dtype``: float32 for training, float64
    where labels are scaled to pixels for evaluation."""
    txt = Path(txt)
    if int(nkpt) < 1:
        raise YoloportError(f"face labels need a keypoint count >= 1, got {nkpt}")
    from .dataset import read_label_text

    text = read_label_text(txt)
    rows, problems = [], []
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        row, reason = parse_face_line(parts, nc, nkpt)
        if reason:
            problems.append(f"{txt}:{no}: {reason}")
        else:
            rows.append(row)
    width = face_label_width(nkpt)
    labels = np.stack(rows).astype(dtype) if rows else np.zeros((0, width), dtype)
    return labels, problems


def read_face_labels_strict(txt: str | os.PathLike, nc: int, nkpt: int, dtype=np.float32) -> np.ndarray:
    """:func:`read_face_labels` that raises a YoloportError naming the first bad line."""
    labels, problems = read_face_labels(txt, nc, nkpt, dtype)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise YoloportError(problems[0] + more)
    return labels


def format_face_labels(rows: np.ndarray) -> str:
    """``rows [n, 5 + 2K]`` (cls, xywhn, landmarks normalised or -1) -> label text, 6 decimals."""
    out = []
    for r in np.asarray(rows, np.float64):
        vals = [f"{int(r[0])}"] + [f"{v:.6f}" for v in r[1:5]]
        vals += ["-1" if v == MISSING else f"{v:.6f}" for v in r[5:]]
        out.append(" ".join(vals) + "\n")
    return "".join(out)
