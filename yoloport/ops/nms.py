"""Non-maximum suppression in numpy (torchvision cannot be installed here).

``nms`` is greedy NMS with a vectorised IoU against all remaining boxes per step; it stops after
``max_keep`` survivors, so its cost is bounded by ``max_det * N``. ``non_max_suppression`` is the
YOLOv5 post-processing (objectness x class confidence, optional multi-label, class-aware) with the
same semantics as Ultralytics v7.0 (``max_nms = 30000``, ``max_det`` survivors per image). Class
awareness is exact: boxes of different classes never suppress each other (Ultralytics emulates this
by offsetting boxes by ``class * 7680``, which costs float32 precision; we mask instead).
"""
from __future__ import annotations

import numpy as np

from .boxes import box_area, xywh2xyxy

MAX_NMS = 30000  # candidates entering NMS per image, as Ultralytics


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_thres: float, classes: np.ndarray | None = None, max_keep: int | None = None
) -> np.ndarray:
    """Greedy NMS. ``boxes: [N, 4]`` xyxy, ``scores: [N]``; returns kept indices, best first.

    A box is suppressed when its IoU with a kept box of the same class (``classes: [N]``, or all one
    class when None) is greater than ``iou_thres``.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order].astype(np.float32, copy=False)
    cls = None if classes is None else classes[order]
    areas = box_area(boxes)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    alive = np.arange(n)
    keep: list[int] = []
    limit = n if max_keep is None else max_keep
    while alive.size and len(keep) < limit:
        i = alive[0]
        keep.append(i)
        rest = alive[1:]
        if not rest.size:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppress = iou > iou_thres
        if cls is not None:
            suppress &= cls[rest] == cls[i]
        alive = rest[~suppress]
    return order[np.asarray(keep, dtype=np.int64)]


def non_max_suppression(
    pred: np.ndarray,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
) -> list[np.ndarray]:
    """YOLOv5 post-processing of decoded predictions.

    ``pred: [B, N, 5 + nc]`` with (x, y, w, h) in input pixels, objectness and per-class
    probabilities. Returns one ``[n, 6]`` float32 array per image: (x1, y1, x2, y2, conf, cls),
    sorted by confidence, at most ``max_det`` rows.
    """
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres and iou_thres must be in [0, 1], got {conf_thres}, {iou_thres}")
    pred = np.asarray(pred, dtype=np.float32)
    nc = pred.shape[2] - 5
    multi_label = multi_label and nc > 1
    out: list[np.ndarray] = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        if not len(x):
            out.append(np.zeros((0, 6), np.float32))
            continue
        scores = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = np.nonzero(scores > conf_thres)
            det = np.concatenate([box[i], scores[i, j, None], j[:, None].astype(np.float32)], 1)
        else:
            j = scores.argmax(1)
            conf = scores[np.arange(len(j)), j]
            det = np.concatenate([box, conf[:, None], j[:, None].astype(np.float32)], 1)[conf > conf_thres]
        if classes is not None:
            det = det[np.isin(det[:, 5], np.asarray(classes, dtype=np.float32))]
        if not len(det):
            out.append(np.zeros((0, 6), np.float32))
            continue
        if len(det) > MAX_NMS:
            det = det[np.argsort(-det[:, 4], kind="stable")[:MAX_NMS]]
        keep = nms(det[:, :4], det[:, 4], iou_thres, None if agnostic else det[:, 5], max_keep=max_det)
        out.append(det[keep].astype(np.float32, copy=False))
    return out
