"""The yolov5-face input protocol, so detections and WIDER FACE numbers compare with upstream's.

yolov5-face's ``detect_face.py`` first resizes the image so its long side is ``img_size`` (INTER_AREA
when shrinking, INTER_LINEAR when enlarging), then letterboxes it with ``auto`` padding to a multiple
of **64** (not 32); its ``test_widerface.py`` letterboxes the original image directly (same 64 padding).
Both then feed RGB / 255. Boxes and landmarks go back to the original image with the gain and padding
recomputed from the two shapes. Everything else (runner, decode, NMS) is yoloport's one path.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..data.letterbox import LetterboxMeta, letterbox, to_input

#: Padding multiple of yolov5-face's letterbox.
FACE_PAD_MULTIPLE = 64


def resize_long_side(im: np.ndarray, long_side: int) -> np.ndarray:
    """``im`` (HWC) resized so that ``max(h, w) == long_side`` (int-truncated sides), INTER_AREA when
    shrinking, INTER_LINEAR when enlarging; ``im`` itself when it already has that size."""
    h0, w0 = im.shape[:2]
    r = long_side / max(h0, w0)
    if r == 1:
        return im
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    return cv2.resize(im, (int(w0 * r), int(h0 * r)), interpolation=interp)


def face_input(im_bgr: np.ndarray, img_size: int = 640, pre_resize: bool = True) -> tuple[np.ndarray, LetterboxMeta]:
    """One BGR image -> ``(x [3, H, W] float32 RGB 0..1, meta)`` as yolov5-face prepares it.

    ``pre_resize``: ``detect_face.py``'s long-side resize first (True) or ``test_widerface.py``'s plain
    letterbox (False). ``meta.ratio``/``meta.pad`` map input pixels straight to the original image."""
    src = resize_long_side(im_bgr, img_size) if pre_resize else im_bgr
    boxed, _, _ = letterbox(src, (img_size, img_size), auto=True, stride=FACE_PAD_MULTIPLE)
    orig_hw = tuple(im_bgr.shape[:2])
    input_hw = tuple(boxed.shape[:2])
    gain = min(input_hw[0] / orig_hw[0], input_hw[1] / orig_hw[1])
    pad = ((input_hw[1] - orig_hw[1] * gain) / 2, (input_hw[0] - orig_hw[0] * gain) / 2)
    return to_input(boxed), LetterboxMeta(orig_hw, input_hw, gain, pad)


def face_prepare_for(runner, img_size_hw: tuple[int, int], task: str | None = None):
    """The ``prepare`` :func:`yoloport.engine.predict.detect_image` takes for ``runner``: yolov5-face's
    protocol (long side resized to ``max(img_size_hw)``, padding to 64) when ``task`` is ``'face'``, or
    by default when the head has landmarks; None (the usual letterbox) otherwise, and for a fixed-shape
    artifact, which takes the one letterbox to its input size. ``task='face'`` on a head without
    landmarks is an error."""
    from functools import partial

    from ..errors import YoloportError

    nkpt = getattr(runner.head, "nkpt", 0)
    if (task or ("face" if nkpt else "detect")) != "face":
        return None
    if not nkpt:
        raise YoloportError("--task face needs a face model (a head with landmarks, e.g. a yolov5-face checkpoint)")
    if getattr(runner, "input_hw", None):
        return None
    return partial(face_input, img_size=max(img_size_hw), pre_resize=True)
