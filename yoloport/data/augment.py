"""Training augmentations of YOLOv5 v7.0 (``utils/augmentations.py`` and the mosaic of
``utils/dataloaders.py``), as pure functions of an image, its labels and a numpy ``Generator``.

Every random draw comes from the ``rng`` argument, so a sample is a function of ``(seed, epoch,
index)`` only (see :func:`sample_rng`): training is reproducible, and a resumed run sees exactly the
images an uninterrupted run would have seen, whatever the number of workers.

Labels here are ``[n, 5]`` float arrays ``(cls, x1, y1, x2, y2)`` in pixels of the image they go with.
Face labels carry their ``K`` landmarks after the box, ``[n, 5 + 2K]`` ``(..., x1, y1, ..., xK, yK)``
in the same pixels, ``-1 -1`` for a missing landmark: every geometric step moves them with the
image, and a landmark that leaves the image becomes ``-1 -1`` (as yolov5-face's augmentation does).
The column count of these arrays is the loader's decision (by the model's head), not a guess.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ..ops.boxes import xywhn2xyxy

FILL = 114

#: Where each of yolov5-face's five landmarks goes under a horizontal flip (left eye, right eye, nose,
#: left mouth corner, right mouth corner): the eyes swap, the nose stays, the mouth corners swap.
FACE_FLIP_INDEX = (1, 0, 2, 4, 3)


def n_keypoints(labels: np.ndarray) -> int:
    """Landmarks per row of a label array ``[n, 5 + 2K]`` (0 for detector labels ``[n, 5]``)."""
    return (labels.shape[1] - 5) // 2


def keypoint_missing(pts: np.ndarray) -> np.ndarray:
    """``pts [..., 2]`` -> bool ``[...]``: the landmark is missing (``-1 -1``, or any negative coordinate)."""
    return (pts < 0).any(-1)


def points_to_pixels(labels: np.ndarray, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> None:
    """Normalised landmarks of ``labels [n, 5 + 2K]`` -> pixels ``x * w + padw``, ``y * h + padh``, in
    place; missing ones stay ``-1``."""
    if n_keypoints(labels) == 0 or not len(labels):
        return
    pts = labels[:, 5:].reshape(len(labels), -1, 2)
    miss = keypoint_missing(pts)
    pts[..., 0] = pts[..., 0] * w + padw
    pts[..., 1] = pts[..., 1] * h + padh
    pts[miss] = -1
    labels[:, 5:] = pts.reshape(len(labels), -1)


def points_to_normalised(labels: np.ndarray, hw: tuple[int, int]) -> None:
    """Pixel landmarks of ``labels [n, 5 + 2K]`` in an image of ``hw`` -> normalised, in place; missing stay ``-1``."""
    if n_keypoints(labels) == 0 or not len(labels):
        return
    pts = labels[:, 5:].reshape(len(labels), -1, 2)
    miss = keypoint_missing(pts)
    pts[..., 0] /= hw[1]
    pts[..., 1] /= hw[0]
    pts[miss] = -1
    labels[:, 5:] = pts.reshape(len(labels), -1)


def drop_points_outside(pts: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``pts [n, K, 2]`` pixels: a landmark outside ``[0, w] x [0, h]`` (or already missing) becomes ``-1 -1``."""
    out = pts.copy()
    bad = keypoint_missing(pts) | (pts[..., 0] > hw[1]) | (pts[..., 1] > hw[0])
    out[bad] = -1
    return out


def warp_points(pts: np.ndarray, M: np.ndarray, out_hw: tuple[int, int], perspective: bool) -> np.ndarray:
    """Landmarks ``pts [n, K, 2]`` (pixels, ``-1`` missing) through the 3x3 ``M``; missing ones and those
    that land outside the ``out_hw`` image become ``-1 -1``."""
    n, k = pts.shape[:2]
    xy = np.ones((n * k, 3))
    xy[:, :2] = pts.reshape(n * k, 2)
    xy = xy @ M.T
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, k, 2)
    xy[keypoint_missing(pts)] = -1
    return drop_points_outside(xy, out_hw)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one training sample: independent of workers, order and resume."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), 0x7930])


def augment_hsv(im: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5,
                vgain: float = 0.5) -> np.ndarray:
    """Random hue/saturation/value gains on a BGR uint8 image, in place (lookup tables as YOLOv5).

    Gains are ``1 + U(-1, 1) * gain`` per channel; hue wraps at 180 (OpenCV's range).
    """
    if not (hgain or sgain or vgain):
        return im
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=im)
    return im


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Which boxes survive an augmentation: ``box1 [4, n]`` before (scaled), ``box2 [4, n]`` after (xyxy).

    Kept: both sides > ``wh_thr`` px, area ratio after/before > ``area_thr``, aspect ratio < ``ar_thr``.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def perspective_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int], rng: np.random.Generator, degrees=0.0,
                       translate=0.1, scale=0.5, shear=0.0, perspective=0.0) -> tuple[np.ndarray, float]:
    """The random 3x3 warp of :func:`random_perspective` and its scale factor ``s``.

    ``M = T @ S @ R @ P @ C``: centre the input, perspective, rotation+scale, shear, then translate
    to ``U(0.5 - translate, 0.5 + translate)`` of the output size.
    """
    C = np.eye(3)
    C[0, 2] = -in_hw[1] / 2
    C[1, 2] = -in_hw[0] / 2
    P = np.eye(3)
    P[2, 0] = rng.uniform(-perspective, perspective)
    P[2, 1] = rng.uniform(-perspective, perspective)
    R = np.eye(3)
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[1]
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[0]
    return T @ S @ R @ P @ C, s


def warp_boxes(boxes: np.ndarray, M: np.ndarray, out_hw: tuple[int, int], perspective: bool) -> np.ndarray:
    """xyxy ``boxes [n, 4]`` through ``M``: the enclosing box of the 4 warped corners, clipped."""
    n = len(boxes)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    xy = xy @ M.T
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    new = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, out_hw[1])
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, out_hw[0])
    return new


def random_perspective(im: np.ndarray, labels: np.ndarray, rng: np.random.Generator, degrees=0.0, translate=0.1,
                       scale=0.5, shear=0.0, perspective=0.0, border=(0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation/perspective of ``im`` and its ``labels [n, 5]``.

    The output is ``im``'s size plus ``2 * border`` (``(h, w)``; negative for mosaic, which crops the
    2x canvas back to the training size). Boxes that become too small or too distorted are dropped
    (:func:`box_candidates`).
    """
    out_hw = (im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2)
    M, s = perspective_matrix(im.shape[:2], out_hw, rng, degrees, translate, scale, shear, perspective)
    if border[0] or border[1] or (M != np.eye(3)).any():
        size = (out_hw[1], out_hw[0])
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=size, borderValue=(FILL, FILL, FILL))
        else:
            im = cv2.warpAffine(im, M[:2], dsize=size, borderValue=(FILL, FILL, FILL))
    if len(labels):
        new = warp_boxes(labels[:, 1:5], M, out_hw, bool(perspective))
        if n_keypoints(labels):
            pts = labels[:, 5:].reshape(len(labels), -1, 2)
            labels[:, 5:] = warp_points(pts, M, out_hw, bool(perspective)).reshape(len(labels), -1)
        keep = box_candidates(labels[:, 1:5].T * s, new.T, area_thr=0.10)
        labels = labels[keep]
        labels[:, 1:5] = new[keep]
    return im, labels


def mosaic_placement(k: int, xc: int, yc: int, hw: tuple[int, int], canvas_hw: tuple[int, int]):
    """Where tile ``k`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of size ``hw`` goes.

    Returns ``((x1a, y1a, x2a, y2a) on the canvas, (x1b, y1b, x2b, y2b) in the tile)`` around the
    mosaic centre ``(xc, yc)``, as YOLOv5's ``load_mosaic``.
    """
    h, w = hw
    H, W = canvas_hw
    if k == 0:
        a = max(xc - w, 0), max(yc - h, 0), xc, yc
        b = w - (a[2] - a[0]), h - (a[3] - a[1]), w, h
    elif k == 1:
        a = xc, max(yc - h, 0), min(xc + w, W), yc
        b = 0, h - (a[3] - a[1]), min(w, a[2] - a[0]), h
    elif k == 2:
        a = max(xc - w, 0), yc, xc, min(H, yc + h)
        b = w - (a[2] - a[0]), 0, w, min(a[3] - a[1], h)
    else:
        a = xc, yc, min(xc + w, W), min(H, yc + h)
        b = 0, 0, min(w, a[2] - a[0]), min(a[3] - a[1], h)
    return a, b


def mosaic4(tiles: list[tuple[np.ndarray, np.ndarray]], img_hw: tuple[int, int], rng: np.random.Generator,
            hyp: dict) -> tuple[np.ndarray, np.ndarray]:
    """4-image mosaic then :func:`random_perspective` back to ``img_hw``.

    ``tiles``: four ``(BGR image resized to fit img_hw, labels [n, 5] (cls, xc, yc, w, h) normalised)``
    (face labels ``[n, 5 + 2K]``: normalised landmarks follow). The centre is drawn from
    ``U(s/2, 3s/2)`` on a ``2h x 2w`` grey canvas. Returns ``(image, labels [n, 5] (cls, x1, y1, x2, y2)
    pixels)`` (``+ 2K`` landmark columns in pixels, ``-1`` where missing or off the image).
    """
    h0, w0 = img_hw
    canvas_hw = (2 * h0, 2 * w0)
    border = (-h0 // 2, -w0 // 2)
    yc = int(rng.uniform(-border[0], 2 * h0 + border[0]))
    xc = int(rng.uniform(-border[1], 2 * w0 + border[1]))
    canvas = np.full((*canvas_hw, 3), FILL, dtype=np.uint8)
    all_labels = []
    for k, (im, lb) in enumerate(tiles):
        h, w = im.shape[:2]
        (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = mosaic_placement(k, xc, yc, (h, w), canvas_hw)
        canvas[y1a:y2a, x1a:x2a] = im[y1b:y2b, x1b:x2b]
        lb = lb.copy()
        if len(lb):
            lb[:, 1:5] = xywhn2xyxy(lb[:, 1:5], w, h, x1a - x1b, y1a - y1b)
            points_to_pixels(lb, w, h, x1a - x1b, y1a - y1b)
        all_labels.append(lb)
    labels = np.concatenate(all_labels, 0) if all_labels else np.zeros((0, 5), np.float32)
    labels[:, [1, 3]] = labels[:, [1, 3]].clip(0, canvas_hw[1])
    labels[:, [2, 4]] = labels[:, [2, 4]].clip(0, canvas_hw[0])
    if n_keypoints(labels) and len(labels):
        pts = drop_points_outside(labels[:, 5:].reshape(len(labels), -1, 2), canvas_hw)
        labels[:, 5:] = pts.reshape(len(labels), -1)
    return random_perspective(canvas, labels, rng, hyp.get("degrees", 0.0), hyp.get("translate", 0.1),
                              hyp.get("scale", 0.5), hyp.get("shear", 0.0), hyp.get("perspective", 0.0), border)


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MixUp (https://arxiv.org/abs/1710.09412) with ratio ``Beta(32, 32)``, as YOLOv5."""
    r = rng.beta(32.0, 32.0)
    im = (im * r + im2 * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)


def flip(im: np.ndarray, labels_xywhn: np.ndarray, rng: np.random.Generator, fliplr: float = 0.5,
         flipud: float = 0.0, flip_index=None) -> tuple[np.ndarray, np.ndarray]:
    """Random vertical then horizontal flip of ``im`` and normalised ``labels [n, 5]`` (cls, xc, yc, w, h).

    Face labels ``[n, 5 + 2K]`` (normalised landmarks, ``-1`` missing): their landmarks are mirrored too,
    and a horizontal flip reorders them by ``flip_index`` (landmark ``k`` becomes landmark
    ``flip_index[k]``; default :data:`FACE_FLIP_INDEX` for five landmarks, else unchanged) so that the
    left eye is still the first point. A vertical flip keeps the order (yolov5-face does the same)."""
    k = n_keypoints(labels_xywhn)
    if rng.random() < flipud:
        im = np.flipud(im)
        if len(labels_xywhn):
            labels_xywhn[:, 2] = 1 - labels_xywhn[:, 2]
            if k:
                _mirror_points(labels_xywhn, axis=1)
    if rng.random() < fliplr:
        im = np.fliplr(im)
        if len(labels_xywhn):
            labels_xywhn[:, 1] = 1 - labels_xywhn[:, 1]
            if k:
                _mirror_points(labels_xywhn, axis=0)
                order = flip_index if flip_index is not None else (FACE_FLIP_INDEX if k == 5 else range(k))
                labels_xywhn[:, 5:] = swap_points(labels_xywhn[:, 5:], order)
    return im, labels_xywhn


def _mirror_points(labels_xywhn: np.ndarray, axis: int) -> None:
    """``x -> 1 - x`` (axis 0) or ``y -> 1 - y`` (axis 1) of the present landmarks, in place."""
    pts = labels_xywhn[:, 5:].reshape(len(labels_xywhn), -1, 2)
    present = ~keypoint_missing(pts)
    pts[..., axis] = np.where(present, 1 - pts[..., axis], -1)
    labels_xywhn[:, 5:] = pts.reshape(len(labels_xywhn), -1)


def swap_points(flat: np.ndarray, order) -> np.ndarray:
    """``flat [n, 2K]`` landmarks -> the same with landmark ``k`` moved to position ``order[k]``."""
    pts = flat.reshape(len(flat), -1, 2)
    out = np.empty_like(pts)
    out[:, list(order)] = pts
    return out.reshape(len(flat), -1)
