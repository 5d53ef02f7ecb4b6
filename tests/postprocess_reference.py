"""The host decode + NMS as they were before issue 14 (commit 462963d), kept verbatim in behaviour as
the reference the fast path must reproduce detection for detection: decode every candidate of every
level (``[B, N, 5+nc]``), then greedy NMS one kept box at a time."""
from __future__ import annotations

import numpy as np

MAX_NMS = 30000


def sigmoid(x):
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


def decode_raw(outputs, anchors_px, strides, sigmoid_applied=False):
    """``nl`` outputs ``[B, na*no, H, W]`` -> ``[B, N, no]``, every candidate decoded."""
    anchors_px = np.asarray(anchors_px, dtype=np.float32)
    outs = sorted(outputs, key=lambda o: -o.shape[-1] * o.shape[-2])
    levels = []
    for raw, anchors, stride in zip(outs, anchors_px, strides):
        na = len(anchors)
        b, c, h, w = raw.shape
        y = np.asarray(raw, dtype=np.float32).reshape(b, na, c // na, h, w).transpose(0, 1, 3, 4, 2)
        y = sigmoid(y) if not sigmoid_applied else y.astype(np.float32, copy=True)
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        grid = np.stack((xs, ys), -1)[None, None]
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * np.float32(stride)
        wh = (y[..., 2:4] * 2) ** 2 * anchors.reshape(1, na, 1, 1, 2)
        levels.append(np.concatenate([xy, wh, y[..., 4:]], -1).reshape(b, na * h * w, c // na))
    return np.concatenate(levels, 1)


def nms(boxes, scores, iou_thres, classes=None, max_keep=None):
    """Greedy NMS, one kept box per step."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order].astype(np.float32, copy=False)
    cls = None if classes is None else classes[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    alive = np.arange(n)
    keep = []
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


def non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45, classes=None, agnostic=False, multi_label=False,
                        max_det=300):
    """``[B, N, 5+nc]`` decoded -> per image ``[n, 6]`` (x1, y1, x2, y2, conf, cls)."""
    pred = np.asarray(pred, dtype=np.float32)
    nc = pred.shape[2] - 5
    multi_label = multi_label and nc > 1
    out = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        if not len(x):
            out.append(np.zeros((0, 6), np.float32))
            continue
        scores = x[:, 5:] * x[:, 4:5]
        box = np.empty_like(x[:, :4])
        box[:, 0] = x[:, 0] - x[:, 2] / 2
        box[:, 1] = x[:, 1] - x[:, 3] / 2
        box[:, 2] = x[:, 0] + x[:, 2] / 2
        box[:, 3] = x[:, 1] + x[:, 3] / 2
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
