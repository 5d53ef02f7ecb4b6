"""Where float and int8 disagree most: a per-image disagreement score and side-by-side pictures.

The score of an image counts the confident detections (``conf >= conf_thres``) of either model that
have no partner in the other model's confident detections (same class, IoU >= ``iou_thres``): 0 when
both find the same objects, and it grows with every object one model finds and the other misses,
misplaces or names differently. It reads the per-image statistics of the two validations
(:class:`~yoloport.engine.image_stats.ImageStats`), so it costs no inference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.image_stats import ImageStats
from ..ops.boxes import box_iou


def _unmatched(a_boxes: np.ndarray, a_cls: np.ndarray, b_boxes: np.ndarray, b_cls: np.ndarray, iou_thres: float) -> int:
    """How many of ``a``'s boxes ``[n, 4]`` have no same-class box of ``b`` ``[m, 4]`` at IoU >= ``iou_thres``."""
    if not len(a_boxes):
        return 0
    if not len(b_boxes):
        return len(a_boxes)
    hit = (box_iou(a_boxes, b_boxes) >= iou_thres) & (a_cls[:, None] == b_cls[None, :])
    return int((~hit.any(1)).sum())


def _confident(s: ImageStats, conf_thres: float) -> tuple[np.ndarray, np.ndarray]:
    keep = s.conf >= conf_thres
    return s.boxes[keep], s.cls[keep]


def disagreement_scores(ref: list[ImageStats], q: list[ImageStats], conf_thres: float = 0.25,
                        iou_thres: float = 0.5) -> np.ndarray:
    """``[n_images]`` disagreement of ``q`` with ``ref`` per image (same images, same order): unmatched
    confident detections of either model, counted both ways."""
    out = np.zeros(len(ref), np.int64)
    for i, (a, b) in enumerate(zip(ref, q)):
        (ab, ac), (bb, bc) = _confident(a, conf_thres), _confident(b, conf_thres)
        out[i] = _unmatched(ab, ac, bb, bc, iou_thres) + _unmatched(bb, bc, ab, ac, iou_thres)
    return out


def side_by_side(image_bgr: np.ndarray, left: ImageStats, right: ImageStats, names, titles: tuple[str, str],
                 conf_thres: float = 0.25, width: int = 720) -> np.ndarray:
    """One picture: ``left``'s confident boxes on the image | ``right``'s, each titled, ``width`` pixels wide."""
    import cv2

    from ..engine.draw import draw_detections

    halves = []
    for s, title in zip((left, right), titles):
        keep = s.conf >= conf_thres
        im = draw_detections(image_bgr, s.boxes[keep], s.conf[keep], s.cls[keep], names)
        band = np.full((max(24, im.shape[0] // 16), im.shape[1], 3), 255, np.uint8)
        scale = band.shape[0] / 40
        cv2.putText(band, f"{title}: {int(keep.sum())} boxes", (6, int(band.shape[0] * 0.75)), 0, scale, (0, 0, 0),
                    max(1, round(scale * 2)), cv2.LINE_AA)
        halves.append(np.concatenate([band, im], 0))
    both = np.concatenate([halves[0], np.full((halves[0].shape[0], 6, 3), 255, np.uint8), halves[1]], 1)
    h = round(both.shape[0] * width / both.shape[1])
    return cv2.resize(both, (width, h), interpolation=cv2.INTER_AREA)


def write_gallery(ref: list[ImageStats], q: list[ImageStats], out_dir, names, titles: tuple[str, str], top: int = 4,
                  conf_thres: float = 0.25, iou_thres: float = 0.5, prefix: str = "") -> list[dict]:
    """Write the ``top`` images where ``q`` disagrees most with ``ref`` (score > 0) as small JPEGs into
    ``out_dir``; returns ``[{image, score, file}]``, worst first (ties: validation order)."""
    import cv2

    from ..data.sources import read_image
    from ..io.atomic import atomic_path

    scores = disagreement_scores(ref, q, conf_thres, iou_thres)
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:top] if scores[i] > 0]
    out_dir = Path(out_dir)
    rows = []
    for rank, i in enumerate(order):
        im = read_image(ref[i].path)
        if im is None:
            continue
        pic = side_by_side(im, ref[i], q[i], names, titles, conf_thres)
        dst = out_dir / f"{prefix}{rank + 1:02d}_{Path(ref[i].path).stem}.jpg"
        with atomic_path(dst) as tmp:
            ok, buf = cv2.imencode(".jpg", pic, [cv2.IMWRITE_JPEG_QUALITY, 80])
            Path(tmp).write_bytes(buf.tobytes())
        rows.append({"image": ref[i].path, "score": int(scores[i]), "file": str(dst)})
    return rows


__all__ = ["disagreement_scores", "side_by_side", "write_gallery"]
