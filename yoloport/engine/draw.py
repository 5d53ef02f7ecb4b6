"""Annotated images: boxes and labels drawn with OpenCV."""
from __future__ import annotations

import cv2
import numpy as np

_PALETTE = [
    "FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
    "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7",
]


def color(i: int) -> tuple[int, int, int]:
    """BGR colour of class ``i``."""
    h = _PALETTE[int(i) % len(_PALETTE)]
    r, g, b = (int(h[k : k + 2], 16) for k in (0, 2, 4))
    return (b, g, r)


def draw_detections(image_bgr: np.ndarray, xyxy, conf, cls, names, line_width: int | None = None) -> np.ndarray:
    """A copy of ``image_bgr`` with each box and ``name conf`` drawn on it."""
    im = image_bgr.copy()
    lw = line_width or max(round(sum(im.shape[:2]) / 2 * 0.003), 2)
    tf = max(lw - 1, 1)
    for box, c, k in zip(xyxy, conf, cls):
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        col = color(k)
        cv2.rectangle(im, p1, p2, col, thickness=lw, lineType=cv2.LINE_AA)
        label = f"{names[int(k)] if int(k) < len(names) else int(k)} {c:.2f}"
        w, h = cv2.getTextSize(label, 0, fontScale=lw / 3, thickness=tf)[0]
        outside = p1[1] - h >= 3
        p2t = p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3
        cv2.rectangle(im, p1, p2t, col, -1, cv2.LINE_AA)
        org = (p1[0], p1[1] - 2 if outside else p1[1] + h + 2)
        cv2.putText(im, label, org, 0, lw / 3, (255, 255, 255), thickness=tf, lineType=cv2.LINE_AA)
    return im


#: BGR colours of the five face landmarks (left eye, right eye, nose, left and right mouth corner).
LANDMARK_COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 255, 0)]


def draw_landmarks(image_bgr: np.ndarray, landmarks, radius: int | None = None) -> np.ndarray:
    """``image_bgr`` with ``landmarks [N, K, 2]`` (pixels) drawn as filled dots, one colour per point
    index (drawn in place; returns the image)."""
    r = radius or max(round(sum(image_bgr.shape[:2]) / 2 * 0.003), 2)
    for pts in np.asarray(landmarks).reshape(len(landmarks), -1, 2):
        for k, (x, y) in enumerate(pts):
            cv2.circle(image_bgr, (int(round(x)), int(round(y))), r, LANDMARK_COLORS[k % len(LANDMARK_COLORS)], -1, cv2.LINE_AA)
    return image_bgr
