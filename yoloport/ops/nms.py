"""Non-maximum suppression in numpy (torchvision cannot be installed here; boards have no torch).

``nms`` is exact greedy NMS: boxes are visited best first and a box is kept unless a kept box of its
class overlaps it with IoU > ``iou_thres``. It is computed in blocks instead of one kept box per
step: classes never suppress each other, so they are handled in independent groups (small classes
packed together); inside a group, boxes come in score-ordered blocks, each block is first checked
against the boxes already kept, then resolved against itself with its suppression matrix (the
greedy keep vector is the unique fixed point of "kept iff no kept earlier box suppresses it",
reached by iterating that rule from "all kept"). The IoU arithmetic is the float32 arithmetic of the
one-box-per-step loop, so both keep the same boxes; the cost is a few dozen array operations per
block instead of a dozen per kept box.

``non_max_suppression`` is the YOLOv5 post-processing (objectness x class confidence, optional
multi-label, class-aware) with the semantics of Ultralytics v7.0 (``max_nms = 30000``, ``max_det``
survivors per image). Class awareness is exact: boxes of different classes never suppress each
other (Ultralytics emulates this by offsetting boxes by ``class * 7680``, which costs float32
precision; we group instead). ``nms_candidates`` is the same on candidates already filtered on
objectness (:func:`yoloport.ops.decode.decode_raw_above`).
"""
from __future__ import annotations

import numpy as np

MAX_NMS = 30000  # candidates entering NMS per image, as Ultralytics
NMS_BLOCK = 256  # boxes resolved together: a [256, 256] suppression matrix at most per step
_STRICT_UPPER = np.triu(np.ones((NMS_BLOCK, NMS_BLOCK), dtype=bool), 1)  # [i, j]: i < j


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_thres: float, classes: np.ndarray | None = None, max_keep: int | None = None
) -> np.ndarray:
    """Greedy NMS. ``boxes: [N, 4]`` xyxy, ``scores: [N]``; returns kept indices ``[K]``, best first.

    A box is suppressed when its IoU with a kept box of the same class (``classes: [N]``, or all one
    class when None) is greater than ``iou_thres``. Ties in score keep the input order. At most
    ``max_keep`` indices are returned (the first ``max_keep`` the full greedy pass would keep).
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    ranked = np.ascontiguousarray(boxes[order], dtype=np.float32)  # [N, 4], best first
    coords = tuple(np.ascontiguousarray(ranked[:, k]) for k in range(4))  # x1, y1, x2, y2: [N] each
    areas = (coords[2] - coords[0]) * (coords[3] - coords[1])
    cls = None if classes is None else np.asarray(classes)[order]
    limit = n if max_keep is None else int(max_keep)
    kept = [_greedy_in_group(coords, areas, None if one_class else cls, group, iou_thres, limit)
            for group, one_class in _independent_groups(cls, n)]
    ranks = np.sort(np.concatenate(kept))[:limit]  # positions in score order
    return order[ranks]


def _independent_groups(cls: np.ndarray | None, n: int) -> list[tuple[np.ndarray, bool]]:
    """Ranks ``0..n-1`` split into groups that cannot suppress one another: whole classes, small ones
    packed together up to ``NMS_BLOCK`` boxes. Each group ascending (best first), with whether it holds
    a single class (then no class test is needed inside it)."""
    if cls is None:
        return [(np.arange(n), True)]
    by_class = np.argsort(cls, kind="stable")  # ranks grouped by class, ascending inside each class
    sorted_cls = cls[by_class]
    starts = np.flatnonzero(np.concatenate(([True], sorted_cls[1:] != sorted_cls[:-1])))
    ends = np.append(starts[1:], n)
    bounds, first = [], 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - first > NMS_BLOCK and s > first:  # close the pack before this class
            bounds.append((first, s))
            first = s
    bounds.append((first, n))
    groups = []
    for a, b in bounds:
        one_class = bool(sorted_cls[a] == sorted_cls[b - 1])
        groups.append((by_class[a:b] if one_class else np.sort(by_class[a:b]), one_class))
    return groups


def _greedy_in_group(coords, areas, cls, ranks: np.ndarray, iou_thres: float, limit: int) -> np.ndarray:
    """Greedy NMS over ``ranks`` (ascending = best first): the ranks kept, at most ``limit``."""
    kept = ranks[:0]
    for start in range(0, len(ranks), NMS_BLOCK):
        block = ranks[start : start + NMS_BLOCK]
        if len(kept):
            block = block[~_suppression(coords, areas, cls, kept, block, iou_thres).any(0)]
        if len(block) > 1:
            within = _suppression(coords, areas, cls, block, block, iou_thres)
            within &= _STRICT_UPPER[: len(block), : len(block)]  # only a better box suppresses
            block = block[_resolve_block(within)]
        kept = np.concatenate((kept, block))
        if len(kept) >= limit:
            return kept[:limit]
    return kept


def _suppression(coords, areas, cls, a: np.ndarray, b: np.ndarray, iou_thres: float) -> np.ndarray:
    """``[len(a), len(b)]`` bool: box ``a[i]`` suppresses box ``b[j]`` (same class, IoU > ``iou_thres``).

    Float32 arithmetic in the order of the one-box-per-step loop (clip, product, ``inter / (area_a +
    area_b - inter)``), so every decision matches it bit for bit."""
    x1, y1, x2, y2 = coords
    w = np.minimum(x2[a][:, None], x2[b][None, :]) - np.maximum(x1[a][:, None], x1[b][None, :])
    h = np.minimum(y2[a][:, None], y2[b][None, :]) - np.maximum(y1[a][:, None], y1[b][None, :])
    inter = np.maximum(w, 0, out=w)  # = np.clip(w, 0, None)
    inter *= np.maximum(h, 0, out=h)
    over = inter / (areas[a][:, None] + areas[b][None, :] - inter) > iou_thres
    if cls is not None:
        over &= cls[a][:, None] == cls[b][None, :]
    return over


def _resolve_block(suppresses: np.ndarray) -> np.ndarray:
    """Greedy keep mask ``[M]`` of a block from its strictly upper-triangular ``[M, M]`` suppression
    matrix (``suppresses[i, j]``: the better box ``i`` suppresses ``j`` if kept).

    Iterates ``keep[j] = no kept i < j suppresses j`` from all-kept; after ``t`` rounds the first ``t``
    entries are final, and the fixed point is unique, so it stops at the greedy answer (in as many
    rounds as the longest chain of suppressions, plus one)."""
    keep = np.ones(len(suppresses), dtype=bool)
    while True:
        new = ~suppresses[keep].any(0)
        if np.array_equal(new, keep):
            return keep
        keep = new


def candidates_to_detections(
    x: np.ndarray, conf_thres: float, classes=None, multi_label: bool = False, nc: int | None = None
) -> np.ndarray:
    """Candidates ``[K, 5+nc]`` (x, y, w, h, obj, class probabilities) -> ``[M, 6]`` rows (x1, y1, x2, y2,
    conf, cls) with ``conf = obj * class probability > conf_thres``: the best class per candidate, or
    every class above the threshold with ``multi_label``; only ``classes`` when given.

    With ``nc`` given, columns after ``5 + nc`` (keypoints) are carried through: ``[M, 6 + E]``."""
    if nc is not None:
        return _with_extra_columns(x, conf_thres, classes, multi_label, nc)
    scores = x[:, 5:] * x[:, 4:5]  # [K, nc]
    xy, half = x[:, 0:2], x[:, 2:4] / 2
    box = np.concatenate((xy - half, xy + half), 1)  # [K, 4] xyxy
    if multi_label:
        i, j = np.nonzero(scores > conf_thres)
        det = np.concatenate([box[i], scores[i, j, None], j[:, None].astype(np.float32)], 1)
    else:
        j = scores.argmax(1)
        conf = scores[np.arange(len(j)), j]
        det = np.concatenate([box, conf[:, None], j[:, None].astype(np.float32)], 1)[conf > conf_thres]
    if classes is not None:
        det = det[np.isin(det[:, 5], np.asarray(classes, dtype=np.float32))]
    return det


def _with_extra_columns(x: np.ndarray, conf_thres: float, classes, multi_label: bool, nc: int) -> np.ndarray:
    """:func:`candidates_to_detections` of ``[K, 5 + nc + E]`` candidates -> ``[M, 6 + E]`` rows."""
    extra = x[:, 5 + nc :]
    det = candidates_to_detections(x[:, : 5 + nc], conf_thres, None, multi_label)
    if multi_label:  # rows are (candidate, class) pairs: recover the candidate of each row
        i, _ = np.nonzero(x[:, 5 : 5 + nc] * x[:, 4:5] > conf_thres)
    else:
        scores = x[:, 5 : 5 + nc] * x[:, 4:5]
        i = np.flatnonzero(scores.max(1) > conf_thres) if nc else np.zeros(0, np.int64)
    det = np.concatenate([det, extra[i]], 1).astype(np.float32, copy=False)
    if classes is not None:
        det = det[np.isin(det[:, 5], np.asarray(classes, dtype=np.float32))]
    return det


def nms_detections(det: np.ndarray, iou_thres: float, agnostic: bool = False, max_det: int = 300) -> np.ndarray:
    """``[M, 6]`` rows -> the at most ``max_det`` rows greedy class-aware NMS keeps, best first (float32)."""
    if not len(det):
        return np.zeros((0, det.shape[1] if det.ndim == 2 else 6), np.float32)
    if len(det) > MAX_NMS:
        det = det[np.argsort(-det[:, 4], kind="stable")[:MAX_NMS]]
    keep = nms(det[:, :4], det[:, 4], iou_thres, None if agnostic else det[:, 5], max_keep=max_det)
    return det[keep].astype(np.float32, copy=False)


def _check_thresholds(conf_thres: float, iou_thres: float) -> None:
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres and iou_thres must be in [0, 1], got {conf_thres}, {iou_thres}")


def nms_candidates(
    candidates: list[np.ndarray],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    nc: int | None = None,
) -> list[np.ndarray]:
    """YOLOv5 post-processing of candidates already filtered on objectness ``> conf_thres``.

    ``nc`` given: candidates are ``[K_b, 5 + nc + E]`` and detections ``[n, 6 + E]`` (keypoints last).

    ``candidates``: one ``[K_b, 5 + nc]`` float32 array per image (as
    :func:`yoloport.ops.decode.decode_raw_above` returns). Returns one ``[n, 6]`` float32 array per
    image: (x1, y1, x2, y2, conf, cls), sorted by confidence, at most ``max_det`` rows.
    """
    _check_thresholds(conf_thres, iou_thres)
    out = []
    for x in candidates:
        width = 6 if nc is None else 1 + x.shape[1] - nc
        multi = multi_label and (x.shape[1] - 5 if nc is None else nc) > 1
        det = candidates_to_detections(x, conf_thres, classes, multi, nc) if len(x) else np.zeros((0, width), np.float32)
        out.append(nms_detections(det, iou_thres, agnostic, max_det))
    return out


def non_max_suppression(
    pred: np.ndarray,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    nc: int | None = None,
) -> list[np.ndarray]:
    """YOLOv5 post-processing of decoded predictions (``nc``: see :func:`nms_candidates`).

    ``pred: [B, N, 5 + nc]`` with (x, y, w, h) in input pixels, objectness and per-class
    probabilities. Returns one ``[n, 6]`` float32 array per image: (x1, y1, x2, y2, conf, cls),
    sorted by confidence, at most ``max_det`` rows.
    """
    _check_thresholds(conf_thres, iou_thres)
    pred = np.asarray(pred, dtype=np.float32)
    return nms_candidates([x[x[:, 4] > conf_thres] for x in pred], conf_thres, iou_thres, classes, agnostic,
                          multi_label, max_det, nc=nc)
