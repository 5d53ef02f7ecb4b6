"""Torch twins of the host NMS (:mod:`yoloport.ops.nms`): the same algorithm written in torch.

Used by the eager ``end2end`` head (:mod:`yoloport.nn.nms_op`) and as the cross-check of the numpy
path in tests and ``benchmarks/bench_postprocess.py``. It imports torch, so :mod:`yoloport.ops`'s
``__init__`` does not import it: the numpy post-processing runs on boards without torch.
"""
from __future__ import annotations

import torch

from .nms import MAX_NMS


def torch_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, classes: torch.Tensor | None = None,
              max_keep: int | None = None) -> torch.Tensor:
    """Greedy NMS, the torch twin of :func:`yoloport.ops.nms.nms`.

    ``boxes: [N, 4]`` xyxy, ``scores: [N]``, ``classes: [N]`` (None: one class). Returns kept indices
    ``[K]`` int64, best first; a box is suppressed by a kept box of its class with IoU > ``iou_thres``.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(-scores, stable=True).indices
    b = boxes[order]
    cls = None if classes is None else classes[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    x1, y1, x2, y2 = b.unbind(1)
    alive = torch.arange(n)
    keep: list[int] = []
    limit = n if max_keep is None else max_keep
    while alive.numel() and len(keep) < limit:
        i = int(alive[0])
        keep.append(i)
        rest = alive[1:]
        if not rest.numel():
            break
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp_(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp_(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppress = iou > iou_thres
        if cls is not None:
            suppress &= cls[rest] == cls[i]
        alive = rest[~suppress]
    return order[torch.tensor(keep, dtype=torch.int64)]


def xywh2xyxy_torch(x: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` centre form -> corners (no in-place ops)."""
    xy, wh = x[..., :2], x[..., 2:4]
    return torch.cat((xy - wh / 2, xy + wh / 2), -1)


def torch_non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                              max_det: int = 300, multi_label: bool = False, nc: int | None = None) -> list[torch.Tensor]:
    """Torch twin of :func:`yoloport.ops.nms.non_max_suppression` (class-aware).

    ``pred: [B, N, 5+nc]`` decoded -> per image ``[n, 6]`` (x1, y1, x2, y2, conf, cls). With ``nc``
    given, ``pred`` is ``[B, N, 5+nc+E]`` and the ``E`` extra columns (keypoints) follow: ``[n, 6+E]``.
    """
    out = []
    nc = pred.shape[2] - 5 if nc is None else int(nc)
    multi_label = multi_label and nc > 1
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        if not x.shape[0]:
            out.append(torch.zeros(0, 1 + pred.shape[2] - nc))
            continue
        scores = x[:, 5 : 5 + nc] * x[:, 4:5]
        extra = x[:, 5 + nc :]
        box = xywh2xyxy_torch(x[:, :4])
        if multi_label:
            i, j = torch.nonzero(scores > conf_thres, as_tuple=True)
            det = torch.cat((box[i], scores[i, j, None], j[:, None].float(), extra[i]), 1)
        else:
            conf, j = scores.max(1)
            det = torch.cat((box, conf[:, None], j[:, None].float(), extra), 1)[conf > conf_thres]
        if det.shape[0] > MAX_NMS:
            det = det[torch.sort(-det[:, 4], stable=True).indices[:MAX_NMS]]
        keep = torch_nms(det[:, :4], det[:, 4], iou_thres, det[:, 5], max_keep=max_det)
        out.append(det[keep])
    return out
