"""Validation of the options every command shares, in one place per kind, before any work starts.

:func:`check_options` is called by :func:`yoloport.config.resolve_settings` on the merged settings
(command line over run config over defaults), so a bad value ends in one :class:`YoloportError`
whatever its origin: ``--img-size -64``, ``conf_thres: 2`` in a run config, ``--batch-size 0``.
Each kind has one checker; the table :data:`CHECKS` says which setting is which kind.
"""
from __future__ import annotations

import argparse
import math

from .errors import YoloportError

#: the largest image side accepted (a typo such as 64000 fails here, not as an out-of-memory error)
MAX_IMAGE_SIDE = 16384


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_img_size(name: str, value) -> None:
    """One positive int (square / longest side) or ``[W, H]`` positive ints, each <= MAX_IMAGE_SIDE."""
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(vals) <= 2 or not all(_is_int(v) for v in vals):
        raise YoloportError(f"{_flag(name)} must be one image size or 'W H' in pixels (whole numbers), got {value!r}")
    bad = [v for v in vals if not 1 <= v <= MAX_IMAGE_SIDE]
    if bad:
        raise YoloportError(f"{_flag(name)}: an image size must be between 1 and {MAX_IMAGE_SIDE} pixels, got {bad[0]}")


def check_fraction(name: str, value) -> None:
    """A threshold in ``[0, 1]`` (confidence, IoU)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise YoloportError(f"{_flag(name)} must be a number between 0 and 1, got {value!r}")


def check_count(name: str, value, minimum: int = 1) -> None:
    """A whole number >= ``minimum`` (batch sizes, epochs, image counts, workers)."""
    if not _is_int(value) or value < minimum:
        raise YoloportError(f"{_flag(name)} must be a whole number, at least {minimum}, got {value!r}")


def check_counts(name: str, value, minimum: int = 1) -> None:
    """One count or a list of counts (``--batch 1 16``)."""
    for v in value if isinstance(value, (list, tuple)) else [value]:
        check_count(name, v, minimum)


def check_overlap(name: str, value) -> None:
    """What to do when image sets overlap: ``split`` or ``error`` (:mod:`yoloport.data.protocol`)."""
    if value not in ("split", "error"):
        raise YoloportError(f"{_flag(name)} must be split or error, got {value!r}")


#: setting -> checker; settings absent or None are not checked (the command's default applies)
CHECKS = {
    "img_size": check_img_size,
    "conf_thres": check_fraction,
    "iou_thres": check_fraction,
    "label_smoothing": check_fraction,
    "batch_size": check_count,
    "max_det": check_count,
    "epochs": check_count,
    "calib_n": check_count,
    "val_n": check_count,
    "eval_n": check_count,
    "repeat": check_count,
    "runs": check_count,
    "bench_batches": check_counts,
    "batch": check_counts,
    "workers": lambda n, v: check_count(n, v, 0),
    "warmup": lambda n, v: check_count(n, v, 0),
    "overlap": check_overlap,
}


def check_options(settings: argparse.Namespace | dict) -> None:
    """Raise one clear YoloportError for the first shared option with a bad value."""
    values = vars(settings) if isinstance(settings, argparse.Namespace) else dict(settings)
    for name, check in CHECKS.items():
        value = values.get(name)
        if value is not None:
            check(name, value)
