"""Host decode of YOLOv5 head outputs (numpy): the same code serves every backend.

A YOLOv5 Detect head has ``nl`` levels; level ``i`` is a convolution output of shape
``[B, na * (5 + nc), H_i, W_i]``. Decoding follows Ultralytics::

    s = sigmoid(raw)
    xy = (2 * s_xy - 0.5 + grid) * stride
    wh = (2 * s_wh) ** 2 * anchor_px

and yields ``[B, N, 5 + nc]`` (x, y, w, h in input pixels, objectness, class probabilities) with N
ordered by level, anchor, row, column, exactly as Ultralytics' ``Detect`` concatenates them.
"""
from __future__ import annotations

import numpy as np


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


def decode_level(raw: np.ndarray, anchors_px: np.ndarray, stride: float, sigmoid_applied: bool = False) -> np.ndarray:
    """Decode one level ``[B, na*no, H, W]`` with ``anchors_px: [na, 2]`` -> ``[B, na*H*W, no]``."""
    na = len(anchors_px)
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


def decode_raw(
    outputs: list[np.ndarray], anchors_px: np.ndarray, strides, sigmoid_applied: bool = False
) -> np.ndarray:
    """Decode all levels (``raw`` export mode) -> ``[B, N, 5 + nc]``.

    ``anchors_px: [nl, na, 2]`` anchors in input pixels; ``strides: [nl]``.
    """
    anchors_px = np.asarray(anchors_px, dtype=np.float32)
    if len(outputs) != len(anchors_px):
        raise ValueError(f"{len(outputs)} head outputs but {len(anchors_px)} anchor levels")
    # Levels may come in any order from a runtime: match them by grid size (largest grid = stride 8).
    outs = sorted(outputs, key=lambda o: -o.shape[-1] * o.shape[-2])
    return np.concatenate(
        [decode_level(o, a, s, sigmoid_applied) for o, a, s in zip(outs, anchors_px, strides)], 1
    )


def decode_split(xy: np.ndarray, wh: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Join the ``split`` export mode's outputs ``xy [B,N,2]``, ``wh [B,N,2]``, ``conf [B,N,1+nc]``."""
    return np.concatenate([np.asarray(xy, np.float32), np.asarray(wh, np.float32), np.asarray(conf, np.float32)], -1)
