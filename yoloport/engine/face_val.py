"""Face validation on YOLO-format face labels (15 columns: ``cls cx cy w h`` then 5 landmark x/y pairs,
normalised, ``-1`` when missing): box mAP@0.5 (and 0.5:0.95) like the detector val, and landmark NME.

For the official WIDER FACE easy/medium/hard protocol use :mod:`yoloport.engine.widerface`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np

from ..errors import YoloportError
from .metrics import ap_per_class, match_predictions, summarize
from .widerface import landmark_nme, read_landmark_labels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def boxes_only(infer, nc: int):
    """``infer`` of a keypoint head (decoded rows ``[B, N, 5 + nc + 2K]``, keypoints last) as a box
    detector's ``infer`` (``[B, N, 5 + nc]``), for :func:`yoloport.engine.val.validate` (box mAP)."""

    def infer_boxes(images: np.ndarray) -> np.ndarray:
        out = infer(images)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return np.asarray(out)[..., : 5 + nc]

    return infer_boxes


def face_folder(data, split: str = "val") -> Path:
    """The folder with ``images/`` and ``labels/`` that ``data`` names: the folder itself, or the
    ``split`` of a face data YAML whose entry is such an ``images`` folder (``yoloport data synth
    --task face`` writes ``<split>/images``)."""
    p = Path(data)
    if p.is_dir():
        return p
    if p.suffix.lower() in (".yaml", ".yml") and p.is_file():
        from ..data.dataset import load_data_yaml

        entries = load_data_yaml(p).split(split)
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name == "images":
            return entries[0].parent
        raise YoloportError(f"{p}: face validation needs the {split} split as one '.../images' folder with "
                            f"'labels' beside it, got {', '.join(str(e) for e in entries)}")
    raise YoloportError(f"--data {data}: not a folder (images/ + labels/, or WIDER FACE) or a face data YAML")


def face_label_pairs(folder) -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of ``folder/images/**`` and ``folder/labels/**`` (same relative stem);
    an image without a label file counts as an image with no faces."""
    folder = Path(folder)
    images = sorted(p for p in (folder / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise YoloportError(f"{folder}: no images under {folder / 'images'}")
    return [(p, (folder / "labels" / p.relative_to(folder / "images")).with_suffix(".txt")) for p in images]


def evaluate_face_labels(runner, folder, img_size: int = 640, conf_thres: float = 0.001, iou_thres: float = 0.6,
                         max_det: int = 300) -> dict:
    """``runner`` (a landmark head) on ``folder`` (``images/`` + ``labels/`` with 15-column labels) ->
    ``{"mAP50", "mAP50_95", "precision", "recall", "NME", "nme_faces", "images", "labels"}``.
    Inference uses yolov5-face's protocol (letterbox padded to 64, no pre-resize)."""
    from .face import face_input
    from .predict import detect_image

    nkpt = getattr(runner.head, "nkpt", 0)
    if not nkpt:
        raise YoloportError("face validation needs a face model (a head with landmarks); this model has none")
    prepare = None if getattr(runner, "input_hw", None) else partial(face_input, img_size=img_size, pre_resize=False)
    iouv = np.linspace(0.5, 0.95, 10)
    stats, nme, n_labels = [], [], 0
    pairs = face_label_pairs(folder)
    for img, label in pairs:
        im = cv2.imread(str(img))
        if im is None:
            raise YoloportError(f"{img}: not a readable image")
        det = detect_image(runner, im, (img_size, img_size), conf_thres, iou_thres, max_det=max_det, prepare=prepare)
        lab = read_landmark_labels(label, det.orig_hw, nkpt, runner.head.nc)
        gt_xyxy, gt_kpts = lab if lab is not None else (np.zeros((0, 4)), np.zeros((0, nkpt, 2)))
        n_labels += len(gt_xyxy)
        tcls = np.zeros(len(gt_xyxy))
        dets = np.concatenate([det.xyxy, det.conf[:, None], det.cls[:, None].astype(np.float32)], 1)
        if len(dets):
            labels = np.concatenate([tcls[:, None], gt_xyxy], 1)
            correct = match_predictions(dets, labels, iouv) if len(labels) else np.zeros((len(dets), len(iouv)), bool)
            stats.append((correct, det.conf, det.cls.astype(np.float64), tcls))
            nme += landmark_nme(det.xyxy, det.landmarks, gt_xyxy, gt_kpts)
        elif len(tcls):
            stats.append((np.zeros((0, len(iouv)), bool), np.zeros(0), np.zeros(0), tcls))
    cat = [np.concatenate(x, 0) for x in zip(*stats)] if stats else [np.zeros((0, len(iouv)), bool)] + [np.zeros(0)] * 3
    ap = ap_per_class(*cat) if len(cat[0]) and cat[0].any() else None
    res = summarize(ap, runner.head.nc, list(runner.head.names), target_cls=cat[3].astype(np.int64))
    res.pop("per_class", None)
    res.update(NME=float(np.mean(nme)) if nme else None, nme_faces=len(nme), images=len(pairs), labels=n_labels)
    return res
