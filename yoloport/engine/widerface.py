"""WIDER FACE evaluation by the official protocol (easy / medium / hard AP), plus landmark NME.

The protocol is that of the WIDER FACE toolkit as yolov5-face's ``widerface_evaluate`` runs it:

- predictions per image are ``x y w h score`` rows, best first, written as upstream's
  ``test_widerface.py`` writes them (integer pixels, score rounded to 3 decimals);
- scores are normalised to 0..1 over the whole prediction set (min-max);
- ground truth comes from the official ``wider_face_val.mat`` (boxes) and
  ``wider_{easy,medium,hard}_val.mat`` (``gt_list``: 1-based indices of the faces a setting counts;
  the other faces are ignored: a prediction matching one is neither true nor false);
- a prediction matches the ground-truth box of highest IoU (pixel-inclusive ``+1`` areas) when that
  IoU is ``>= 0.5``; precision and recall are read at 1000 score thresholds and AP is the VOC area
  under the interpolated curve.

Landmark error: NME over faces that have landmark labels (15-column YOLO labels with values other
than ``-1``), each face's mean point distance divided by ``sqrt(w * h)`` of its labelled box, for the
best-IoU prediction (IoU >= 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import YoloportError

SETTINGS = ("easy", "medium", "hard")
THRESH_NUM = 1000
IOU_THRESH = 0.5
#: yolov5-face's ``non_max_suppression_face`` keeps every NMS survivor (no 300 cap); at most as many as
#: enter NMS (30000).
UPSTREAM_MAX_DET = 30000


@dataclass
class WiderGroundTruth:
    """The official ground truth: per event name, per image name (no extension), ``boxes [M, 4]``
    (x, y, w, h pixels) and, per setting, the 0-based indices of the faces it counts."""

    events: list[str]
    images: dict[str, list[str]]
    boxes: dict[tuple[str, str], np.ndarray]
    keep: dict[str, dict[tuple[str, str], np.ndarray]]


def load_wider_ground_truth(gt_dir) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``."""
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a dependency of the evaluation only
        from ..errors import DependencyMissing

        raise DependencyMissing("scipy", "reading the WIDER FACE .mat ground truth") from None
    gt_dir = Path(gt_dir)
    files = {name: gt_dir / f"wider_{name}_val.mat" for name in ("face", *SETTINGS)}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise YoloportError(f"WIDER FACE ground truth missing: {', '.join(missing)}")
    try:
        mats = {k: loadmat(str(p)) for k, p in files.items()}
        face = mats["face"]
        events = [str(e[0][0]) for e in face["event_list"]]
        images, boxes = {}, {}
        keep = {s: {} for s in SETTINGS}
        for i, ev in enumerate(events):
            names = [str(f[0][0]) for f in face["file_list"][i][0]]
            images[ev] = names
            for j, name in enumerate(names):
                boxes[(ev, name)] = np.asarray(face["face_bbx_list"][i][0][j][0], dtype=np.float64).reshape(-1, 4)
                for s in SETTINGS:
                    idx = np.asarray(mats[s]["gt_list"][i][0][j][0]).reshape(-1).astype(np.int64)
                    keep[s][(ev, name)] = idx - 1
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise YoloportError(f"{gt_dir}: not the official WIDER FACE .mat layout ({type(e).__name__}: {e})") from None
    return WiderGroundTruth(events, images, boxes, keep)


def upstream_pred_rows(xyxy: np.ndarray, conf: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """Detections in original pixels -> ``[N, 5]`` ``x y w h score`` as upstream writes them.

    Boxes are rounded, normalised by the image size and turned back into integer corners with
    ``int(c * W - 0.5 * w * W)`` (float32, truncation), scores rounded to 3 decimals and capped at 1."""
    h, w = orig_hw
    b = np.round(np.asarray(xyxy, np.float32))
    gn = np.array([w, h, w, h], np.float32)
    xywh = np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1) / gn
    x1 = np.trunc(xywh[:, 0] * np.float32(w) - np.float32(0.5) * xywh[:, 2] * np.float32(w))
    y1 = np.trunc(xywh[:, 1] * np.float32(h) - np.float32(0.5) * xywh[:, 3] * np.float32(h))
    x2 = np.trunc(xywh[:, 0] * np.float32(w) + np.float32(0.5) * xywh[:, 2] * np.float32(w))
    y2 = np.trunc(xywh[:, 1] * np.float32(h) + np.float32(0.5) * xywh[:, 3] * np.float32(h))
    score = np.array([float(f"{min(float(c), 1.0):.3f}") for c in conf], np.float64)
    xywh_px = np.stack((x1, y1, x2 - x1, y2 - y1), 1).astype(np.float64).reshape(-1, 4)
    return np.concatenate([xywh_px, score.reshape(-1, 1)], 1)


def normalise_scores(preds: dict) -> None:
    """Min-max normalise the score column of every ``[N, 5]`` array in ``preds`` (in place) over the
    whole prediction set, as the WIDER toolkit does."""
    scores = [v[:, -1] for v in preds.values() if len(v)]
    if not scores:
        return
    lo = min(float(s.min()) for s in scores)
    hi = max(float(s.max()) for s in scores)
    diff = hi - lo
    for v in preds.values():
        if len(v):
            with np.errstate(divide="ignore", invalid="ignore"):
                v[:, -1] = (v[:, -1] - lo) / diff


def box_overlaps_inclusive(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``[N, K]`` IoU with pixel-inclusive (``+1``) widths and heights, the WIDER toolkit's overlap."""
    iw = np.minimum(a_xyxy[:, None, 2], b_xyxy[None, :, 2]) - np.maximum(a_xyxy[:, None, 0], b_xyxy[None, :, 0]) + 1
    ih = np.minimum(a_xyxy[:, None, 3], b_xyxy[None, :, 3]) - np.maximum(a_xyxy[:, None, 1], b_xyxy[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a_xyxy[:, 2] - a_xyxy[:, 0] + 1) * (a_xyxy[:, 3] - a_xyxy[:, 1] + 1)
    area_b = (b_xyxy[:, 2] - b_xyxy[:, 0] + 1) * (b_xyxy[:, 3] - b_xyxy[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1), 0.0)


def image_eval(pred: np.ndarray, gt_xywh: np.ndarray, counted: np.ndarray, iou_thresh: float = IOU_THRESH):
    """One image: ``pred [N, 5]`` (x y w h score, best first), ``gt_xywh [M, 4]``, ``counted [M]``
    (1 = the setting counts this face) -> ``(recalled_so_far [N], proposal [N])``: after each
    prediction the number of counted faces found, and +1 / -1 (a prediction matching an ignored face)."""
    p = pred[:, :4].copy()
    p[:, 2:] += p[:, :2]
    g = gt_xywh.copy()
    g[:, 2:] += g[:, :2]
    overlaps = box_overlaps_inclusive(p, g)
    recall = np.zeros(len(g))
    proposal = np.ones(len(p))
    recalled = np.zeros(len(p))
    for h in range(len(p)):
        best = int(overlaps[h].argmax())
        if overlaps[h, best] >= iou_thresh:
            if counted[best] == 0:
                recall[best] = -1
                proposal[h] = -1
            elif recall[best] == 0:
                recall[best] = 1
        recalled[h] = np.count_nonzero(recall == 1)
    return recalled, proposal


def image_pr_info(pred: np.ndarray, proposal: np.ndarray, recalled: np.ndarray, thresh_num: int = THRESH_NUM) -> np.ndarray:
    """``[thresh_num, 2]``: at each threshold ``1 - (t + 1) / thresh_num``, the proposals kept and the
    faces recalled by the predictions scoring at least that much (``pred`` is best first)."""
    out = np.zeros((thresh_num, 2))
    for t in range(thresh_num):
        idx = np.where(pred[:, 4] >= 1 - (t + 1) / thresh_num)[0]
        if len(idx):
            last = idx[-1]
            out[t, 0] = np.count_nonzero(proposal[: last + 1] == 1)
            out[t, 1] = recalled[last]
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision-recall curve (VOC, all points)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def wider_ap(preds: dict[tuple[str, str], np.ndarray], gt: WiderGroundTruth, iou_thresh: float = IOU_THRESH,
             thresh_num: int = THRESH_NUM) -> dict[str, float]:
    """Easy / medium / hard AP of ``preds`` (``(event, image) -> [N, 5]`` upstream rows, scores not yet
    normalised; every ground-truth image must have an entry, possibly empty)."""
    missing = [f"{e}/{n}" for (e, n) in gt.boxes if (e, n) not in preds]
    if missing:
        raise YoloportError(f"no predictions for {len(missing)} ground-truth image(s), e.g. {missing[0]}")
    preds = {k: np.array(v, dtype=np.float64).reshape(-1, 5) for k, v in preds.items()}
    normalise_scores(preds)
    aps = {}
    for setting in SETTINGS:
        count_face = 0
        curve = np.zeros((thresh_num, 2))
        for ev in gt.events:
            for name in gt.images[ev]:
                key = (ev, name)
                keep = gt.keep[setting][key]
                count_face += len(keep)
                boxes, pred = gt.boxes[key], preds[key]
                if len(boxes) == 0 or len(pred) == 0:
                    continue
                counted = np.zeros(len(boxes))
                if len(keep):
                    counted[keep] = 1
                recalled, proposal = image_eval(pred, boxes, counted, iou_thresh)
                curve += image_pr_info(pred, proposal, recalled, thresh_num)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = curve[:, 1] / curve[:, 0]
            recall = curve[:, 1] / count_face
        aps[setting] = voc_ap(recall, precision)
    return aps


def landmark_nme(pred_xyxy: np.ndarray, pred_kpts: np.ndarray, gt_xyxy: np.ndarray, gt_kpts: np.ndarray,
                 iou_thresh: float = IOU_THRESH) -> list[float]:
    """Per labelled face, the mean distance between its ``K`` landmarks and those of the prediction of
    best IoU (``>= iou_thresh``), divided by ``sqrt(w * h)`` of the labelled box. Faces without landmark
    labels (any coordinate < 0) or without a matching prediction are skipped. Shapes: ``pred_xyxy
    [N, 4]``, ``pred_kpts [N, K, 2]``, ``gt_xyxy [M, 4]``, ``gt_kpts [M, K, 2]`` (pixels)."""
    from ..ops.boxes import box_iou

    if not len(pred_xyxy) or not len(gt_xyxy):
        return []
    iou = box_iou(np.asarray(gt_xyxy, np.float32), np.asarray(pred_xyxy, np.float32))  # [M, N]
    out = []
    for m in range(len(gt_xyxy)):
        if (gt_kpts[m] < 0).any():
            continue
        n = int(iou[m].argmax())
        if iou[m, n] < iou_thresh:
            continue
        w, h = gt_xyxy[m, 2] - gt_xyxy[m, 0], gt_xyxy[m, 3] - gt_xyxy[m, 1]
        dist = np.linalg.norm(pred_kpts[n] - gt_kpts[m], axis=-1).mean()
        out.append(float(dist / max(np.sqrt(w * h), 1e-9)))
    return out


def read_landmark_labels(path: Path, orig_hw: tuple[int, int], nkpt: int = 5, nc: int = 1):
    """A yolov5-face label file (``5 + 2 * nkpt`` columns) -> ``(xyxy [M, 4], kpts [M, K, 2])`` in pixels
    (``-1`` kept for missing landmarks); ``None`` when the file does not exist.

    Read by the one face-label reader (:func:`yoloport.data.face_labels.read_face_labels_strict`), so its
    refusal rules hold here too: the first bad line is a YoloportError naming ``file:line`` and why."""
    from ..data.face_labels import MISSING, read_face_labels_strict

    path = Path(path)
    if not path.is_file():
        return None
    h, w = orig_hw
    a = read_face_labels_strict(path, nc, nkpt, dtype=np.float64)  # [M, 5 + 2K] normalised
    cx, cy, bw, bh = a[:, 1] * w, a[:, 2] * h, a[:, 3] * w, a[:, 4] * h
    xyxy = np.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), 1)
    k = a[:, 5:].reshape(-1, nkpt, 2)
    missing = (k == MISSING).all(-1, keepdims=True)
    kpts = np.where(missing, -1.0, k * np.array([w, h]))
    return xyxy, kpts


def evaluate_wider_folder(runner, folder, img_size: int = 640, conf_thres: float = 0.02, iou_thres: float = 0.5,
                          progress=None) -> dict:
    """Run ``runner`` (a keypoint head) on a WIDER FACE folder and score it.

    ``folder`` holds ``images/<event>/<name>.jpg``, ``ground_truth/wider_*_val.mat`` and optionally
    ``labels/<event>/<name>.txt`` (15 columns, for NME). Inference follows upstream's
    ``test_widerface.py``: letterbox to ``img_size`` padded to a multiple of 64, conf 0.02, IoU 0.5.
    Returns ``{"AP": {easy, medium, hard}, "NME": float | None, "nme_faces": int, "images": int,
    "predictions": int}``."""
    import cv2
    from functools import partial

    from .face import face_input
    from .predict import detect_image

    folder = Path(folder)
    if not getattr(runner.head, "nkpt", 0):
        raise YoloportError("WIDER FACE evaluation needs a face model (a head with landmarks); this model has none")
    gt = load_wider_ground_truth(folder / "ground_truth")
    # a fixed-shape artifact takes the one letterbox to its input size; any-shape runners upstream's
    prepare = None if getattr(runner, "input_hw", None) else partial(face_input, img_size=img_size, pre_resize=False)
    preds, nme, n_preds = {}, [], 0
    for ev in gt.events:
        for name in gt.images[ev]:
            path = folder / "images" / ev / f"{name}.jpg"
            im = cv2.imread(str(path)) if path.is_file() else None
            if im is None:
                raise YoloportError(f"{path}: missing or unreadable (listed in the ground truth)")
            det = detect_image(runner, im, (img_size, img_size), conf_thres, iou_thres, max_det=UPSTREAM_MAX_DET, path=str(path),
                               prepare=prepare)
            preds[(ev, name)] = upstream_pred_rows(det.xyxy, det.conf, det.orig_hw)
            n_preds += len(det)
            labels = read_landmark_labels(folder / "labels" / ev / f"{name}.txt", det.orig_hw, runner.head.nkpt,
                                          runner.head.nc)
            if labels is not None and det.landmarks is not None:
                nme += landmark_nme(det.xyxy, det.landmarks, labels[0], labels[1])
            if progress:
                progress(f"{ev}/{name}: {len(det)} faces")
    return {
        "AP": wider_ap(preds, gt),
        "NME": float(np.mean(nme)) if nme else None,
        "nme_faces": len(nme),
        "images": len(preds),
        "predictions": n_preds,
    }
