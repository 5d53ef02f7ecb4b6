"""Host decode of YOLOv5 head outputs (numpy): the same code serves every backend.

A YOLOv5 Detect head has ``nl`` levels; level ``i`` is a convolution output of shape
``[B, na * (5 + nc), H_i, W_i]``. Decoding follows Ultralytics::

    s = sigmoid(raw)
    xy = (2 * s_xy - 0.5 + grid) * stride
    wh = (2 * s_wh) ** 2 * anchor_px

and yields ``[B, N, 5 + nc]`` (x, y, w, h in input pixels, objectness, class probabilities) with N
ordered by level, anchor, row, column, exactly as Ultralytics' ``Detect`` concatenates them.

:func:`decode_raw` decodes every candidate (the form validation's metrics and the comparisons read);
:func:`decode_raw_above` is the detection path: it filters on objectness first, in logit space when
the graph has no sigmoid, and decodes only the survivors, level by level, never materialising
``[B, N, 5 + nc]``. Its rows are bit for bit the rows of :func:`decode_raw` whose objectness passes.
"""
from __future__ import annotations

import math

import numpy as np

from .keypoints import decode_keypoints, keypoints_last


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32 (``exp`` overflow for very negative inputs correctly gives 0)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


def make_grid(h: int, w: int) -> np.ndarray:
    """``[H, W, 2]`` cell offsets (x, y) as float32."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.stack((xs, ys), -1)


def level_to_bhwc(raw: np.ndarray, na: int) -> np.ndarray:
    """``[B, na*no, H, W]`` conv output -> ``[B, na, H, W, no]`` (Ultralytics' view + permute)."""
    b, c, h, w = raw.shape
    if c % na:
        raise ValueError(f"head output has {c} channels, not a multiple of {na} anchors")
    return raw.reshape(b, na, c // na, h, w).transpose(0, 1, 3, 4, 2)


def decode_level(
    raw: np.ndarray, anchors_px: np.ndarray, stride: float, sigmoid_applied: bool = False, nkpt: int = 0
) -> np.ndarray:
    """Decode one level ``[B, na*no, H, W]`` with ``anchors_px: [na, 2]`` -> ``[B, na*H*W, no]``.

    With ``nkpt`` keypoints (channels ``5 .. 5+2*nkpt`` of each anchor, never squashed), rows are
    ``x y w h obj cls... k1x k1y ...`` (:mod:`yoloport.ops.keypoints`)."""
    na = len(anchors_px)
    if nkpt:
        return _decode_level_keypoints(raw, anchors_px, stride, sigmoid_applied, nkpt)
    y = level_to_bhwc(np.asarray(raw, dtype=np.float32), na)
    if not sigmoid_applied:
        y = sigmoid(y)
    else:
        y = y.astype(np.float32, copy=True)
    b, _, h, w, no = y.shape
    grid = make_grid(h, w)[None, None]  # [1,1,H,W,2]
    anchor = np.asarray(anchors_px, dtype=np.float32).reshape(1, na, 1, 1, 2)
    xy = (y[..., 0:2] * 2 - 0.5 + grid) * np.float32(stride)
    wh = (y[..., 2:4] * 2) ** 2 * anchor
    out = np.concatenate([xy, wh, y[..., 4:]], -1)
    return out.reshape(b, na * h * w, no)


def _decode_level_keypoints(raw, anchors_px, stride, sigmoid_applied: bool, nkpt: int) -> np.ndarray:
    """:func:`decode_level` of a keypoint head -> ``[B, na*H*W, 5 + nc + 2*nkpt]`` (keypoints last).
    ``sigmoid_applied`` means the graph squashed every channel but the keypoints."""
    na = len(anchors_px)
    x = level_to_bhwc(np.asarray(raw, dtype=np.float32), na)  # [B, na, H, W, no]
    y = x.astype(np.float32, copy=True) if sigmoid_applied else sigmoid(x)
    b, _, h, w, no = y.shape
    grid = make_grid(h, w)[None, None]
    anchor = np.asarray(anchors_px, dtype=np.float32).reshape(1, na, 1, 1, 2)
    c0 = 5 + 2 * nkpt
    y[..., 0:2] = (y[..., 0:2] * 2 - 0.5 + grid) * np.float32(stride)
    y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * anchor
    y[..., 5:c0] = decode_keypoints(x[..., 5:c0], grid, anchor, stride)
    return keypoints_last(y, nkpt).reshape(b, na * h * w, no)


def decode_raw(
    outputs: list[np.ndarray], anchors_px: np.ndarray, strides, sigmoid_applied: bool = False, nkpt: int = 0
) -> np.ndarray:
    """Decode all levels (``raw`` export mode) -> ``[B, N, 5 + nc]`` (``+ 2 * nkpt`` keypoint columns last).

    ``anchors_px: [nl, na, 2]`` anchors in input pixels; ``strides: [nl]``.
    """
    anchors_px = np.asarray(anchors_px, dtype=np.float32)
    outs = _levels_by_size(outputs, len(anchors_px))
    return np.concatenate(
        [decode_level(o, a, s, sigmoid_applied, nkpt) for o, a, s in zip(outs, anchors_px, strides)], 1
    )


# Objectness margin of the logit-space pre-filter (probability units): a raw value at or below
# logit(thres - margin) cannot round above ``thres`` once its float32 sigmoid is taken, so the
# pre-filter never drops a candidate the exact test would keep.
_PREFILTER_MARGIN = 1e-4


def prefilter_logit(obj_thres: float) -> float:
    """Raw objectness (before the sigmoid) below or at which a candidate surely fails ``obj > obj_thres``.

    The inverse sigmoid of ``obj_thres - 1e-4`` (``-inf`` when that is <= 0): conservative, so the
    exact ``sigmoid(raw) > obj_thres`` test on the survivors decides, exactly as on every candidate.
    """
    p = float(obj_thres) - _PREFILTER_MARGIN
    if p <= 0.0:
        return float("-inf")
    if p >= 1.0:
        return float("inf")
    return math.log(p / (1.0 - p))


def _levels_by_size(outputs: list[np.ndarray], n_levels: int) -> list[np.ndarray]:
    """Levels in decode order (largest grid = stride 8 first): a runtime may return them in any order."""
    if len(outputs) != n_levels:
        raise ValueError(f"{len(outputs)} head outputs but {n_levels} anchor levels")
    return sorted(outputs, key=lambda o: -o.shape[-1] * o.shape[-2])


def decode_level_above(
    raw: np.ndarray, anchors_px: np.ndarray, stride: float, obj_thres: float, sigmoid_applied: bool = False,
    nkpt: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the candidates of one level ``[B, na*no, H, W]`` whose objectness is ``> obj_thres``.

    Returns ``(image [K] int64, rows [K, no] float32)``, ordered by image, anchor, row, column: each row
    equals the matching row of :func:`decode_level` bit for bit. Only the objectness channel of every
    cell is read before the filter; the ``no`` channels of the ``K`` survivors are gathered after it.
    """
    raw = np.asarray(raw, dtype=np.float32)
    na = len(anchors_px)
    b, c, h, w = raw.shape
    if c % na:
        raise ValueError(f"head output has {c} channels, not a multiple of {na} anchors")
    cells = raw.reshape(b, na, c // na, h, w)  # a view: [B, na, no, H, W]
    obj = cells[:, :, 4]  # [B, na, H, W] view
    cut = obj_thres if sigmoid_applied else prefilter_logit(obj_thres)
    bi, ai, yi, xi = np.nonzero(obj > np.float32(cut))  # NaN never passes, as in the exact test
    rows = cells[bi, ai, :, yi, xi]  # [K, no], a fresh array
    raw_rows = rows if nkpt else None
    if not sigmoid_applied:
        rows = sigmoid(rows)
    elif nkpt:
        rows = rows.copy()
    keep = rows[:, 4] > obj_thres  # the exact test, as on the fully decoded array
    if not keep.all():
        rows, bi, ai, yi, xi = rows[keep], bi[keep], ai[keep], yi[keep], xi[keep]
        raw_rows = raw_rows[keep] if nkpt else None
    cell_xy = np.stack((xi, yi), 1).astype(np.float32)  # [K, 2], the grid's values
    anchors = np.asarray(anchors_px, dtype=np.float32)[ai]  # [K, 2]
    rows[:, 0:2] = (rows[:, 0:2] * 2 - 0.5 + cell_xy) * np.float32(stride)
    rows[:, 2:4] = (rows[:, 2:4] * 2) ** 2 * anchors
    if nkpt:
        c0 = 5 + 2 * nkpt
        rows[:, 5:c0] = decode_keypoints(raw_rows[:, 5:c0], cell_xy, anchors, stride)
        rows = keypoints_last(rows, nkpt)
    return bi, rows


def decode_raw_above(
    outputs: list[np.ndarray], anchors_px: np.ndarray, strides, obj_thres: float, sigmoid_applied: bool = False,
    nkpt: int = 0,
) -> list[np.ndarray]:
    """Decode only the candidates with objectness ``> obj_thres`` -> one ``[K_b, no]`` array per image.

    Equal, row for row and bit for bit, to ``[p[p[:, 4] > obj_thres] for p in decode_raw(...)]`` at a
    fraction of the cost: ``anchors_px: [nl, na, 2]`` in input pixels, ``strides: [nl]``.
    """
    anchors_px = np.asarray(anchors_px, dtype=np.float32)
    levels = _levels_by_size(outputs, len(anchors_px))
    batch = levels[0].shape[0]
    per_level = [
        decode_level_above(o, a, s, obj_thres, sigmoid_applied, nkpt) for o, a, s in zip(levels, anchors_px, strides)
    ]
    images = []
    for b in range(batch):
        parts = [rows[bi == b] if batch > 1 else rows for bi, rows in per_level]
        images.append(np.concatenate(parts, 0))
    return images


def decode_split(xy: np.ndarray, wh: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Join the ``split`` export mode's outputs ``xy [B,N,2]``, ``wh [B,N,2]``, ``conf [B,N,1+nc]``."""
    return np.concatenate([np.asarray(xy, np.float32), np.asarray(wh, np.float32), np.asarray(conf, np.float32)], -1)
