"""Detection metrics with Ultralytics YOLOv5 v7.0 semantics (``val.py`` + ``utils/metrics.py``).

- :func:`match_predictions`: which detections are true positives at each IoU threshold
  (v7.0 ``process_batch``: per threshold, greedy one-to-one matching by IoU, classes must agree).
- :func:`ap_per_class`: per-class AP at each threshold (101-point interpolated area under the
  precision envelope, as COCO), and precision/recall at the confidence that maximises the
  smoothed mean F1 over classes.
- :func:`summarize`: the numbers val prints (P, R, mAP50, mAP50-95, per-class rows).

Conventions: boxes are xyxy pixels; ``iouv`` is ``linspace(0.5, 0.95, 10)`` in float32 (as torch
builds it), compared with float32 IoUs.
"""
from __future__ import annotations

import numpy as np

from ..ops.boxes import box_iou

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).astype(np.float32)


def match_predictions(detections: np.ndarray, labels: np.ndarray, iouv: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """Mark true positives: ``detections [n, 6]`` (x1, y1, x2, y2, conf, cls), ``labels [m, 5]``
    (cls, x1, y1, x2, y2) -> ``correct [n, len(iouv)]`` bool.

    For each threshold ``t``, exactly as v7.0 ``process_batch``: candidate pairs have IoU >= t and
    the same class; each detection keeps its highest-IoU label, then each label keeps the first
    detection (lowest index: highest confidence, as NMS sorts them) among those that chose it.
    Each detection and each label is used at most once.
    """
    detections = np.asarray(detections, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.float32)
    iouv = np.asarray(iouv, dtype=np.float32)
    correct = np.zeros((len(detections), len(iouv)), dtype=bool)
    if not len(detections) or not len(labels):
        return correct
    iou = box_iou(labels[:, 1:5], detections[:, :4]).astype(np.float32)  # [m, n]
    same_class = labels[:, 0:1] == detections[None, :, 5]
    for k, t in enumerate(iouv):
        li, di = np.nonzero((iou >= t) & same_class)
        if not len(li):
            continue
        m = np.stack([li, di, iou[li, di]], 1).astype(np.float64)  # [label, detection, iou]
        if len(m) > 1:
            m = m[m[:, 2].argsort()[::-1]]
            m = m[np.unique(m[:, 1], return_index=True)[1]]  # best label per detection (now by detection)
            m = m[np.unique(m[:, 0], return_index=True)[1]]  # first detection per label
        correct[m[:, 1].astype(int), k] = True
    return correct


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter over a fraction ``f`` of ``y`` (odd width ``round(len*f*2)//2 + 1``), edges padded
    with the end values; same length as ``y``."""
    nf = round(len(y) * f * 2) // 2 + 1
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one precision/recall curve (points in decreasing confidence): ``(ap, mpre, mrec)``.

    Sentinels (recall 0, precision 1) and (recall 1, precision 0) are added, precision is
    replaced by its envelope (running max from the right), and the area is the trapezoid rule
    over 101 recall points ``0, 0.01, ..., 1`` of the interpolated envelope (COCO's 101 points).
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    ap = float(_trapezoid(y, x))
    return ap, mpre, mrec


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray, eps: float = 1e-16) -> dict:
    """Per-class precision, recall, F1 and AP (Ultralytics v7.0 ``ap_per_class``).

    ``tp [n, T]`` bool (from :func:`match_predictions`, all images concatenated), ``conf [n]``,
    ``pred_cls [n]``, ``target_cls [m]`` (class of every label). Classes are those present in
    ``target_cls``; a class without predictions scores 0. P, R and F1 are read at one confidence
    for all classes: the argmax of ``smooth(mean F1 over classes, 0.1)`` on a 1000-point
    confidence grid.

    Returns ``{"classes" [k] int, "n_labels" [k], "p" [k], "r" [k], "f1" [k], "ap" [k, T],
    "tp" [k], "fp" [k], "conf" (the chosen confidence)}``.
    """
    tp = np.asarray(tp, dtype=np.float64)
    if tp.ndim == 1:
        tp = tp[:, None]
    conf = np.asarray(conf, dtype=np.float64)
    pred_cls = np.asarray(pred_cls)
    target_cls = np.asarray(target_cls)
    i = np.argsort(-conf)
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]

    classes, nt = np.unique(target_cls, return_counts=True)
    nc = len(classes)
    px = np.linspace(0, 1, 1000)
    ap = np.zeros((nc, tp.shape[1]))
    p, r = np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(classes):
        sel = pred_cls == c
        n_l, n_p = nt[ci], int(sel.sum())
        if n_p == 0 or n_l == 0:
            continue
        tpc = tp[sel].cumsum(0)
        fpc = (1 - tp[sel]).cumsum(0)
        recall = tpc / (n_l + eps)
        precision = tpc / (tpc + fpc)
        r[ci] = np.interp(-px, -conf[sel], recall[:, 0], left=0)  # xp must increase: negate
        p[ci] = np.interp(-px, -conf[sel], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])[0]

    f1 = 2 * p * r / (p + r + eps)
    k = int(smooth(f1.mean(0), 0.1).argmax()) if nc else 0
    p, r, f1 = p[:, k], r[:, k], f1[:, k]
    tp_k = (r * nt).round()
    fp_k = (tp_k / (p + eps) - tp_k).round()
    return {
        "classes": classes.astype(int),
        "n_labels": nt,
        "p": p,
        "r": r,
        "f1": f1,
        "ap": ap,
        "tp": tp_k,
        "fp": fp_k,
        "conf": float(px[k]),
    }


def summarize(stats: dict | None, nc: int, names=None, target_cls=None, images_per_class=None) -> dict:
    """The validation summary from :func:`ap_per_class` output (``None`` when nothing matched).

    ``target_cls``: all label classes (for the instance counts of classes absent from ``stats``).
    ``images_per_class``: optional ``[nc]`` count of images containing each class.
    Returns ``{precision, recall, mAP50, mAP50_95, per_class: [{class, name, images, instances,
    precision, recall, mAP50, mAP50_95}]}``; per_class lists the classes that have labels.
    """
    names = list(names) if names is not None else [str(i) for i in range(nc)]
    nt = np.bincount(np.asarray(target_cls if target_cls is not None else [], dtype=np.int64), minlength=nc)
    out = {"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50_95": 0.0, "per_class": []}
    if stats is None:
        return out
    ap50, ap = stats["ap"][:, 0], stats["ap"].mean(1)
    if len(stats["classes"]):
        out.update(
            precision=float(stats["p"].mean()),
            recall=float(stats["r"].mean()),
            mAP50=float(ap50.mean()),
            mAP50_95=float(ap.mean()),
        )
    for i, c in enumerate(stats["classes"]):
        c = int(c)
        out["per_class"].append(
            {
                "class": c,
                "name": names[c] if c < len(names) else str(c),
                "images": int(images_per_class[c]) if images_per_class is not None else None,
                "instances": int(nt[c]) if c < len(nt) else int(stats["n_labels"][i]),
                "precision": float(stats["p"][i]),
                "recall": float(stats["r"][i]),
                "mAP50": float(ap50[i]),
                "mAP50_95": float(ap[i]),
            }
        )
    return out


class ConfusionMatrix:
    """Detection confusion matrix ``[nc + 1, nc + 1]`` (rows: predicted, columns: true; the last
    row/column is background), as Ultralytics v7.0: detections above ``conf`` are matched to labels
    at IoU > ``iou_thres``, one-to-one by IoU."""

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres

    def process_batch(self, detections: np.ndarray | None, labels: np.ndarray) -> None:
        """``detections [n, 6]`` (xyxy, conf, cls), ``labels [m, 5]`` (cls, xyxy), one image."""
        gt_classes = np.asarray(labels[:, 0], dtype=int)
        if detections is None or not len(detections):
            for gc in gt_classes:
                self.matrix[self.nc, gc] += 1
            return
        detections = detections[detections[:, 4] > self.conf]
        det_classes = detections[:, 5].astype(int)
        iou = box_iou(labels[:, 1:5], detections[:, :4]) if len(labels) else np.zeros((0, len(detections)))
        li, di = np.nonzero(iou > self.iou_thres)
        if len(li):
            m = np.stack([li, di, iou[li, di]], 1)
            if len(li) > 1:
                m = m[m[:, 2].argsort()[::-1]]
                m = m[np.unique(m[:, 1], return_index=True)[1]]
                m = m[m[:, 2].argsort()[::-1]]
                m = m[np.unique(m[:, 0], return_index=True)[1]]
        else:
            m = np.zeros((0, 3))
        m0, m1 = m[:, 0].astype(int), m[:, 1].astype(int)
        for i, gc in enumerate(gt_classes):
            j = m0 == i
            if j.sum() == 1:
                self.matrix[det_classes[m1[j][0]], gc] += 1
            else:
                self.matrix[self.nc, gc] += 1
        for i, dc in enumerate(det_classes):
            if not (m1 == i).any():
                self.matrix[dc, self.nc] += 1


__all__ = ["IOU_THRESHOLDS", "ConfusionMatrix", "ap_per_class", "compute_ap", "match_predictions", "smooth", "summarize"]
