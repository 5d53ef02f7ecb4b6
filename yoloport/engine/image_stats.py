"""Per-image validation statistics: what :func:`yoloport.engine.val.validate` decided for each image.

They are what a paired bootstrap over images needs (:mod:`yoloport.analysis.bootstrap`) and what a
gallery of disagreements draws (:mod:`yoloport.analysis.gallery`): for every detection its
confidence, class, box and true-positive vector at the ten IoU thresholds, and for every image the
classes of its labels. Concatenated in validation order they are exactly the arrays the validator
hands to :func:`yoloport.engine.metrics.ap_per_class`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import YoloportError


@dataclass(frozen=True)
class ImageStats:
    """One validated image. ``conf [n]`` float32, ``cls [n]`` float32, ``tp [n, 10]`` bool (true
    positive at IoU 0.50:0.05:0.95), ``boxes [n, 4]`` float32 xyxy in original-image pixels (NMS order:
    highest confidence first); ``label_cls [m]`` float32 and ``label_boxes [m, 4]`` xyxy original pixels."""

    path: str
    conf: np.ndarray
    cls: np.ndarray
    tp: np.ndarray
    boxes: np.ndarray
    label_cls: np.ndarray
    label_boxes: np.ndarray


def concatenate(stats: list[ImageStats]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(tp [N, 10], conf [N], pred_cls [N], target_cls [M])`` of all images in order: the arguments
    of :func:`~yoloport.engine.metrics.ap_per_class`."""
    if not stats:
        return np.zeros((0, 10), bool), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    return (np.concatenate([s.tp for s in stats], 0), np.concatenate([s.conf for s in stats]),
            np.concatenate([s.cls for s in stats]), np.concatenate([s.label_cls for s in stats]))


_FIELDS = ("conf", "cls", "tp", "boxes", "label_cls", "label_boxes")


def save_image_stats(path, stats: list[ImageStats]) -> None:
    """Write ``stats`` to one ``.npz`` (per field: all images concatenated, plus per-image counts)."""
    from ..io.atomic import atomic_path

    arrays = {"paths": np.array([s.path for s in stats], dtype=str),
              "n_det": np.array([len(s.conf) for s in stats], np.int64),
              "n_lab": np.array([len(s.label_cls) for s in stats], np.int64)}
    for f in _FIELDS:
        parts = [getattr(s, f) for s in stats]
        arrays[f] = np.concatenate(parts, 0) if parts else np.zeros(0)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_image_stats(path) -> list[ImageStats]:
    """Read what :func:`save_image_stats` wrote; a damaged or inconsistent file is a YoloportError."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            a = {k: z[k] for k in ("paths", "n_det", "n_lab", *_FIELDS)}
    except Exception as e:  # noqa: BLE001 - any read failure means the file is not trusted
        raise YoloportError(f"{path}: not a readable image-statistics file ({e})") from None
    det_end, lab_end = np.cumsum(a["n_det"]), np.cumsum(a["n_lab"])
    if len(a["paths"]) != len(det_end) or (len(det_end) and (det_end[-1] != len(a["conf"]) or lab_end[-1] != len(a["label_cls"]))):
        raise YoloportError(f"{path}: image statistics do not add up (damaged file)")
    out = []
    for i, p in enumerate(a["paths"]):
        d = slice(det_end[i] - a["n_det"][i], det_end[i])
        lb = slice(lab_end[i] - a["n_lab"][i], lab_end[i])
        out.append(ImageStats(str(p), a["conf"][d], a["cls"][d], a["tp"][d].reshape(-1, 10).astype(bool),
                              a["boxes"][d].reshape(-1, 4), a["label_cls"][lb], a["label_boxes"][lb].reshape(-1, 4)))
    return out


__all__ = ["ImageStats", "concatenate", "load_image_stats", "save_image_stats"]


LABEL_OUTCOMES = ("found", "loose box", "wrong class", "unfound")
"""What became of one label at a confidence threshold: a detection of its class at IoU >= 0.5
(``found``), only at IoU 0.1-0.5 (``loose box``), another class's detection at IoU >= 0.5 (``wrong
class``), or none of these (``unfound``)."""


def label_outcome(label_cls: int, label_box: np.ndarray, det_cls: np.ndarray, det_boxes: np.ndarray) -> tuple[str, int]:
    """One label's outcome among :data:`LABEL_OUTCOMES` and the class it was taken for (-1 if none).
    ``label_box [4]`` xyxy; ``det_cls [n]``, ``det_boxes [n, 4]`` xyxy: the detections kept at the threshold."""
    from ..ops.boxes import box_iou

    if not len(det_boxes):
        return "unfound", -1
    iou = box_iou(np.asarray(label_box, np.float64)[None], np.asarray(det_boxes, np.float64))[0]  # [n]
    same = det_cls == label_cls
    if (iou[same] >= 0.5).any():
        return "found", -1
    if (iou[same] >= 0.1).any():
        return "loose box", -1
    other = (~same) & (iou >= 0.5)
    if other.any():
        return "wrong class", int(det_cls[other][np.argmax(iou[other])])
    return "unfound", -1


def label_outcomes(s: ImageStats, conf: float) -> list[tuple[int, float, str, int]]:
    """``(class, longest side px, outcome, taken for)`` of every label of ``s``, against its detections
    of confidence >= ``conf`` (:func:`label_outcome`)."""
    keep = s.conf >= conf
    det_cls, det_boxes = s.cls[keep].astype(int), s.boxes[keep]
    out = []
    for c, box in zip(s.label_cls.astype(int), s.label_boxes):
        outcome, other = label_outcome(int(c), box, det_cls, det_boxes)
        out.append((int(c), float(max(box[2] - box[0], box[3] - box[1])), outcome, other))
    return out
