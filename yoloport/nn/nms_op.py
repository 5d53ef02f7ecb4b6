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

``torch_nms`` / ``torch_non_max_suppression`` (the torch twins of :mod:`yoloport.ops.nms`) live in
:mod:`yoloport.ops.nms_torch`; they are imported from there.
"""
from __future__ import annotations

import torch

from ..ops.nms_torch import torch_nms, torch_non_max_suppression, xywh2xyxy_torch  # noqa: F401 (twins, re-exported)

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
                     max_det: int, kpts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-head tensors -> ``(num_dets [B, 1] int32, detections [B, max_det, 7 (+2K)] float32)``.

    ``xy, wh: [B, N, 2]`` pixels, ``conf: [B, N, 1+nc]`` (objectness, class probabilities), ``kpts``:
    ``[B, N, 2K]`` keypoints in pixels or None. Score is
    ``obj * cls`` of the best class; candidates with score <= ``conf_thres`` are dropped (as the host's
    ``obj > conf_thres`` then ``conf > conf_thres``). Rows are (batch, class, score, x1, y1, x2, y2),
    then the selected box's keypoints when ``kpts`` is given,
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
    cols = [bi.to(scores.dtype)[:, None], ci.to(scores.dtype)[:, None], sel_scores[:, None], sel_boxes]
    if kpts is not None:
        cols.append(kpts.reshape(-1, kpts.shape[2]).index_select(0, bi * n + ni))  # [K, 2K]
    rows = torch.cat(cols, 1)
    pad = torch.zeros(max_det, rows.shape[1], dtype=rows.dtype, device=rows.device)
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
