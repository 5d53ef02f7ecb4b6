"""Box conversions and IoU on numpy arrays. ``boxes: [N, 4]``; xyxy pixels unless named otherwise."""
from __future__ import annotations

import numpy as np


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """``[N, 4]`` centre form (x, y, w, h) -> corners (x1, y1, x2, y2)."""
    y = np.empty_like(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x: np.ndarray) -> np.ndarray:
    """``[N, 4]`` corners -> centre form."""
    y = np.empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywhn2xyxy(x: np.ndarray, w: int, h: int, padw: float = 0.0, padh: float = 0.0) -> np.ndarray:
    """Normalised centre form -> pixel corners in a ``w x h`` image, shifted by the padding."""
    y = np.empty_like(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy2xywhn(x: np.ndarray, w: int, h: int, clip: bool = False) -> np.ndarray:
    """Pixel corners -> normalised centre form (YOLO label layout)."""
    if clip:
        x = clip_boxes(x.copy(), (h, w))
    y = np.empty_like(x)
    y[..., 0] = ((x[..., 0] + x[..., 2]) / 2) / w
    y[..., 1] = ((x[..., 1] + x[..., 3]) / 2) / h
    y[..., 2] = (x[..., 2] - x[..., 0]) / w
    y[..., 3] = (x[..., 3] - x[..., 1]) / h
    return y


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` xyxy -> ``[N]`` areas (no +1)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Pairwise IoU of ``a: [N, 4]`` and ``b: [M, 4]`` (xyxy) -> ``[N, M]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter + eps)


def clip_boxes(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Clip xyxy ``boxes`` in place to an image of ``(h, w)``; returns them."""
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, hw[1])
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, hw[0])
    return boxes


def letterbox_gain_pad(input_hw: tuple[int, int], orig_hw: tuple[int, int], ratio_pad=None) -> tuple[float, tuple]:
    """``(gain, (padw, padh))`` of the letterbox from ``orig_hw`` to ``input_hw``: ``ratio_pad = (ratio,
    (padw, padh))`` as the letterbox recorded it, or recomputed from the two shapes as Ultralytics does."""
    if ratio_pad is None:
        gain = min(input_hw[0] / orig_hw[0], input_hw[1] / orig_hw[1])
        return gain, ((input_hw[1] - orig_hw[1] * gain) / 2, (input_hw[0] - orig_hw[0] * gain) / 2)
    return (ratio_pad[0][0] if np.ndim(ratio_pad[0]) else ratio_pad[0]), ratio_pad[1]


def scale_boxes(
    input_hw: tuple[int, int], boxes: np.ndarray, orig_hw: tuple[int, int], ratio_pad=None
) -> np.ndarray:
    """Map xyxy ``boxes`` from letterboxed-input pixels back to original-image pixels (in place).

    ``ratio_pad = (ratio, (padw, padh))`` as recorded by the letterbox; when None it is recomputed from
    the two shapes the way Ultralytics does.
    """
    gain, pad = letterbox_gain_pad(input_hw, orig_hw, ratio_pad)
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., :4] /= gain
    return clip_boxes(boxes, orig_hw)
