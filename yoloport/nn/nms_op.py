"""NMS inside the graph (``end2end`` export mode) and torch twins of the host NMS.

:class:`NonMaxSuppressionOp` is a ``torch.autograd.Function``: eagerly it runs a greedy torch NMS
with ONNX ``NonMaxSuppression`` semantics (per batch, per class, ``score > score_threshold``,
suppress ``IoU > iou_threshold``, at most ``max_output_boxes_per_class`` per class, returns
``[K, 3]`` int64 rows of (batch, class, box)); while exporting its ``symbolic`` emits the ONNX op
itself. :func:`detection_output` wraps it into fixed-size outputs in the layout of Cambricon's
``yolov5_detection_output``: a count per image and ``max_det`` rows of
(batch, class, score, x1, y1, x2, y2), zero padded, best first.

Class awareness is exact: each candidate gets a score only in its best class's row of the
``[B, nc, N]`` score tensor (one-hot of the ArgMax, first maximum on ties like numpy's ``argmax``),
so ONNX's per-class NMS reproduces the host's class-aware NMS without Ultralytics' box offsets.

``torch_nms`` / ``torch_non_max_suppression`` are written the same way as the numpy versions in
:mod:`yoloport.ops.nms` (used by the benchmark and by the eager path).
"""
from __future__ import annotations

import torch

MAX_NMS = 30000


# ----------------------------------------------------------------------------- torch NMS (host twin)


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
                              max_det: int = 300, multi_label: bool = False) -> list[torch.Tensor]:
    """Torch twin of :func:`yoloport.ops.nms.non_max_suppression` (class-aware).

    ``pred: [B, N, 5+nc]`` decoded -> per image ``[n, 6]`` (x1, y1, x2, y2, conf, cls).
    """
    out = []
    multi_label = multi_label and pred.shape[2] > 6
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        if not x.shape[0]:
            out.append(torch.zeros(0, 6))
            continue
        scores = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy_torch(x[:, :4])
        if multi_label:
            i, j = torch.nonzero(scores > conf_thres, as_tuple=True)
            det = torch.cat((box[i], scores[i, j, None], j[:, None].float()), 1)
        else:
            conf, j = scores.max(1)
            det = torch.cat((box, conf[:, None], j[:, None].float()), 1)[conf > conf_thres]
        if det.shape[0] > MAX_NMS:
            det = det[torch.sort(-det[:, 4], stable=True).indices[:MAX_NMS]]
        keep = torch_nms(det[:, :4], det[:, 4], iou_thres, det[:, 5], max_keep=max_det)
        out.append(det[keep])
    return out


# ----------------------------------------------------------------------------- the graph op


def nms_select_eager(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thres: float,
                     score_thres: float) -> torch.Tensor:
    """ONNX ``NonMaxSuppression`` semantics in torch: ``boxes [B, N, 4]`` xyxy, ``scores [B, C, N]``
    -> ``[K, 3]`` int64 (batch, class, box), ordered by batch, class, then score (descending)."""
    rows = []
    for b in range(boxes.shape[0]):
        c, n = torch.nonzero(scores[b] > score_thres, as_tuple=True)
        if not c.numel():
            continue
        keep = torch_nms(boxes[b, n], scores[b, c, n], iou_thres, c)  # best first, all classes
        kc, kn = c[keep], n[keep]
        for cls in torch.unique(kc):  # sorted classes; within a class best first
            sel = kn[kc == cls][:max_per_class]
            rows.append(torch.stack((torch.full_like(sel, b), torch.full_like(sel, int(cls)), sel), 1))
    if not rows:
        return torch.zeros(0, 3, dtype=torch.int64)
    return torch.cat(rows, 0).to(torch.int64)


class NonMaxSuppressionOp(torch.autograd.Function):
    """``NonMaxSuppression(boxes [B,N,4], scores [B,C,N]) -> selected [K, 3]`` (ONNX opset >= 10)."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_thres: float, score_thres: float):  # noqa: D102
        return nms_select_eager(boxes, scores, max_per_class, iou_thres, score_thres)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_thres: float, score_thres: float):  # noqa: D102
        max_t = g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([iou_thres], dtype=torch.float32))
        score_t = g.op("Constant", value_t=torch.tensor([score_thres], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_t, iou_t, score_t, center_point_box_i=0)


def detection_output(xy: torch.Tensor, wh: torch.Tensor, conf: torch.Tensor, conf_thres: float, iou_thres: float,
                     max_det: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-head tensors -> ``(num_dets [B, 1] int32, detections [B, max_det, 7] float32)``.

    ``xy, wh: [B, N, 2]`` pixels, ``conf: [B, N, 1+nc]`` (objectness, class probabilities). Score is
    ``obj * cls`` of the best class; candidates with score <= ``conf_thres`` are dropped (as the host's
    ``obj > conf_thres`` then ``conf > conf_thres``). Rows are (batch, class, score, x1, y1, x2, y2),
    best first, zero padded after ``num_dets``. Fixed shapes only: the padding is appended before a
    TopK with a constant ``k = max_det``, so no output size depends on the data.
    """
    bsz, n, _ = xy.shape
    nc = conf.shape[2] - 1
    half = wh / 2
    boxes = torch.cat((xy - half, xy + half), 2)  # [B, N, 4] xyxy
    scores = conf[..., 1:] * conf[..., 0:1]  # [B, N, nc]
    best = scores.argmax(2, keepdim=True)  # [B, N, 1]
    onehot = (best == torch.arange(nc, device=xy.device).view(1, 1, nc)).to(scores.dtype)
    scores_t = (scores * onehot).permute(0, 2, 1)  # [B, nc, N], one nonzero class per box
    sel = NonMaxSuppressionOp.apply(boxes, scores_t.contiguous(), max_det, iou_thres, conf_thres)  # [K, 3]
    bi, ci, ni = sel[:, 0], sel[:, 1], sel[:, 2]
    sel_scores = scores_t.reshape(-1).index_select(0, (bi * nc + ci) * n + ni)  # [K]
    sel_boxes = boxes.reshape(-1, 4).index_select(0, bi * n + ni)  # [K, 4]
    rows = torch.cat((bi.to(scores.dtype)[:, None], ci.to(scores.dtype)[:, None], sel_scores[:, None], sel_boxes), 1)
    pad = torch.zeros(max_det, 7, dtype=rows.dtype, device=rows.device)
    rows = torch.cat((rows, pad), 0)  # [K + max_det, 7]
    counts, dets = [], []
    for b in range(bsz):  # static batch: unrolled while tracing
        s = rows[:, 2] * (rows[:, 0] == b).to(rows.dtype)  # this image's scores, others 0
        top, idx = torch.topk(s, max_det)
        valid = (top > 0).to(rows.dtype)
        dets.append(rows.index_select(0, idx) * valid[:, None])
        counts.append(valid.sum().reshape(1))
    num = torch.stack(counts, 0).to(torch.int32)  # [B, 1]
    return num, torch.stack(dets, 0)
