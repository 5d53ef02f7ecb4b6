"""The one preprocessing path: letterbox + normalise, used by detect, val, calibration and bench.

Letterboxing matches Ultralytics YOLOv5: scale the image so it fits ``new_shape`` keeping its aspect
ratio, then pad with grey (114) either minimally to a stride multiple (``auto=True``, PyTorch
inference) or fully to ``new_shape`` (``auto=False``, fixed-shape graphs and batched validation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import YoloportError

LETTERBOX_COLOR = (114, 114, 114)


@dataclass(frozen=True)
class LetterboxMeta:
    """How an original image maps onto the network input.

    ``orig_hw`` and ``input_hw`` are (height, width); ``ratio`` the scale applied to the original;
    ``pad`` the (left, top) padding in input pixels (halves of the total, as floats).
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    ratio: float
    pad: tuple[float, float]

    def to_dict(self) -> dict:
        return {"orig_hw": list(self.orig_hw), "input_hw": list(self.input_hw), "ratio": self.ratio, "pad": list(self.pad)}


def parse_img_size(size, stride: int = 32, warn=print) -> tuple[int, int]:
    """Command-line image size -> ``(h, w)``, rounded up to a multiple of ``stride``.

    ``size`` is one int (square), or ``[W, H]`` as given on the command line (``--img-size 736 416``).
    A size that is not a stride multiple is rounded up and the change is reported through ``warn``.
    """
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        vals = [int(v) for v in size]
        if len(vals) == 1:
            w = h = vals[0]
        elif len(vals) == 2:
            w, h = vals
        else:
            raise YoloportError(f"image size must be one number or 'W H', got {list(size)}")
    if w <= 0 or h <= 0:
        raise YoloportError(f"image size must be positive, got {w}x{h}")
    hw = (make_divisible(h, stride), make_divisible(w, stride))
    if hw != (h, w) and warn:
        warn(f"image size {w}x{h} is not a multiple of the stride {stride}: using {hw[1]}x{hw[0]}")
    return hw


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


def letterbox(
    im: np.ndarray,
    new_shape_hw: int | tuple[int, int] = (640, 640),
    color: tuple[int, int, int] = LETTERBOX_COLOR,
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize and pad ``im`` (HWC) to ``new_shape_hw``: returns ``(im, (r, r), (dw, dh))``.

    ``dw, dh`` are the half paddings (float); the padded borders are ``round(d -/+ 0.1)`` as in
    Ultralytics. ``auto`` pads only to the next multiple of ``stride``.
    """
    shape = im.shape[:2]
    if isinstance(new_shape_hw, (int, np.integer)):
        new_shape_hw = (int(new_shape_hw), int(new_shape_hw))
    r = min(new_shape_hw[0] / shape[0], new_shape_hw[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))  # (w, h)
    dw, dh = new_shape_hw[1] - new_unpad[0], new_shape_hw[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw, dh = dw / 2, dh / 2
    if (shape[1], shape[0]) != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (r, r), (float(dw), float(dh))


def to_input(im_bgr: np.ndarray) -> np.ndarray:
    """Letterboxed BGR HWC uint8 -> RGB CHW float32 in [0, 1] (the network's input layout)."""
    return np.ascontiguousarray(im_bgr[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def preprocess(
    im_bgr: np.ndarray, img_size_hw: tuple[int, int], stride: int = 32, auto: bool = True, scaleup: bool = True
) -> tuple[np.ndarray, LetterboxMeta]:
    """Letterbox and normalise one BGR image: ``(chw float32 RGB 0..1, LetterboxMeta)``."""
    lb, ratio, pad = letterbox(im_bgr, img_size_hw, auto=auto, scaleup=scaleup, stride=stride)
    meta = LetterboxMeta(tuple(im_bgr.shape[:2]), tuple(lb.shape[:2]), float(ratio[0]), pad)
    return to_input(lb), meta
