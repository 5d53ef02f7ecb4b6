"""Keypoints (face landmarks) of a keypoint head: decode and map back to the original image (numpy).

A keypoint head (yolov5-face: 5 landmarks) predicts, per anchor, ``2 * K`` raw values after the
objectness. They are *not* passed through the sigmoid; keypoint ``k`` of the anchor at cell
``(cx, cy)`` of a level with stride ``s`` and anchor ``(aw, ah)`` pixels decodes as::

    x_k = raw_x_k * aw + cx * s
    y_k = raw_y_k * ah + cy * s

(the cell index, with no 0.5 offset, as yolov5-face). Keypoints are ``[N, K, 2]`` (x, y) arrays.
"""
from __future__ import annotations

import numpy as np

from .boxes import letterbox_gain_pad


def decode_keypoints(raw: np.ndarray, cell_xy: np.ndarray, anchors_px: np.ndarray, stride: float) -> np.ndarray:
    """``raw: [..., 2K]`` keypoint logits, ``cell_xy: [..., 2]`` cell indices, ``anchors_px: [..., 2]``
    -> ``[..., 2K]`` keypoints in input pixels (x1, y1, ..., xK, yK), float32."""
    raw = np.asarray(raw, dtype=np.float32)
    k = raw.shape[-1] // 2
    pts = raw.reshape(*raw.shape[:-1], k, 2)
    out = pts * np.asarray(anchors_px, np.float32)[..., None, :] + (np.asarray(cell_xy, np.float32) * np.float32(stride))[..., None, :]
    return out.reshape(raw.shape).astype(np.float32, copy=False)


def clip_keypoints(kpts: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Clip ``[..., K, 2]`` keypoints in place to an image of ``(h, w)``; returns them."""
    kpts[..., 0] = kpts[..., 0].clip(0, hw[1])
    kpts[..., 1] = kpts[..., 1].clip(0, hw[0])
    return kpts


def scale_keypoints(input_hw: tuple[int, int], kpts: np.ndarray, orig_hw: tuple[int, int], ratio_pad=None) -> np.ndarray:
    """Map ``[..., K, 2]`` keypoints from letterboxed-input pixels to original-image pixels (in place),
    with the same gain and padding as :func:`yoloport.ops.boxes.scale_boxes`, then clip them."""
    gain, pad = letterbox_gain_pad(input_hw, orig_hw, ratio_pad)
    kpts[..., 0] -= pad[0]
    kpts[..., 1] -= pad[1]
    kpts /= gain
    return clip_keypoints(kpts, orig_hw)


def keypoints_last(rows: np.ndarray, nkpt: int) -> np.ndarray:
    """Reorder decoded ``[..., 5 + 2K + nc]`` rows (the head's channel order: box, obj, keypoints,
    classes) to ``[..., 5 + nc + 2K]`` (box, obj, classes, keypoints): the layout NMS reads."""
    c0 = 5 + 2 * nkpt
    return np.concatenate([rows[..., :5], rows[..., c0:], rows[..., 5:c0]], -1)
