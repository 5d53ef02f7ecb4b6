"""The one preprocessing path: letterbox + normalise, used by detect, val, calibration and bench.

Letterboxing matches Ultralytics YOLOv5: scale the image so it fits ``new_shape`` keeping its aspect
ratio, then pad with grey (114) either minimally to a stride multiple (``auto=True``, PyTorch
inference) or fully to ``new_shape`` (``auto=False``, fixed-shape graphs and batched validation).

:func:`preprocess` makes the network input with one resize and one pass (BGR->RGB, HWC->CHW, /255)
straight into a float32 buffer, which batch loops reuse (``out=``, :func:`preprocess_batch`); its
values are those of ``to_input(letterbox(...))`` bit for bit.
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


YOLOV5_MIN_INPUT_MULTIPLE = 32
"""Every YOLOv5 backbone downsamples to P5/32, also when its head stops at P4 (``yolov5n-p2``)."""


def input_multiple(strides) -> int:
    """What an input's height and width must be multiples of for a YOLOv5 whose Detect levels have
    ``strides`` (a list, tuple or 1-D tensor; empty or None: 32): the largest stride, at least 32.

    A P2-P3-P4 head has strides 4, 8, 16, but its backbone still halves down to 1/32 and the FPN
    concatenates that level, upsampled, with the 1/16 one: an input of 16 x odd pixels cannot run."""
    return max([int(s) for s in (strides if strides is not None else ())] + [YOLOV5_MIN_INPUT_MULTIPLE])


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


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where a ``(h, w)`` image lands in the network input: resized to ``resized_wh`` (w, h) by ``ratio``,
    then padded by ``borders = (top, bottom, left, right)`` pixels into ``input_hw``; ``pad`` is the
    (left, top) half padding as floats (what boxes are shifted by)."""

    ratio: float
    resized_wh: tuple[int, int]
    borders: tuple[int, int, int, int]
    pad: tuple[float, float]
    input_hw: tuple[int, int]


def letterbox_geometry(
    orig_hw: tuple[int, int], new_shape_hw: int | tuple[int, int] = (640, 640), auto: bool = True,
    scaleup: bool = True, stride: int = 32,
) -> LetterboxGeometry:
    """Ultralytics' letterbox arithmetic for an ``orig_hw`` image: scale to fit ``new_shape_hw`` keeping
    the aspect ratio (never up when not ``scaleup``), then pad to ``new_shape_hw`` (``auto=False``) or
    only to the next multiple of ``stride`` (``auto=True``); borders are ``round(d -/+ 0.1)``."""
    if isinstance(new_shape_hw, (int, np.integer)):
        new_shape_hw = (int(new_shape_hw), int(new_shape_hw))
    r = min(new_shape_hw[0] / orig_hw[0], new_shape_hw[1] / orig_hw[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(orig_hw[1] * r)), int(round(orig_hw[0] * r))  # (w, h)
    dw, dh = new_shape_hw[1] - new_unpad[0], new_shape_hw[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw, dh = dw / 2, dh / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    input_hw = (new_unpad[1] + top + bottom, new_unpad[0] + left + right)
    return LetterboxGeometry(r, new_unpad, (top, bottom, left, right), (float(dw), float(dh)), input_hw)


def _resized(im: np.ndarray, geo: LetterboxGeometry) -> np.ndarray:
    """``im`` resized to the geometry's ``resized_wh`` (bilinear), or ``im`` itself when it already is."""
    if (im.shape[1], im.shape[0]) != geo.resized_wh:
        return cv2.resize(im, geo.resized_wh, interpolation=cv2.INTER_LINEAR)
    return im


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
    Ultralytics. ``auto`` pads only to the next multiple of ``stride``. (Training and label code use
    this uint8 form; the network input is made by :func:`preprocess`, which gives the same pixels.)
    """
    geo = letterbox_geometry(im.shape[:2], new_shape_hw, auto, scaleup, stride)
    top, bottom, left, right = geo.borders
    im = cv2.copyMakeBorder(_resized(im, geo), top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (geo.ratio, geo.ratio), geo.pad


def to_input(im_bgr: np.ndarray) -> np.ndarray:
    """Letterboxed BGR HWC uint8 -> RGB CHW float32 in [0, 1] (the network's input layout)."""
    return np.ascontiguousarray(im_bgr[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def _fill_input(out_chw: np.ndarray, im_bgr: np.ndarray, geo: LetterboxGeometry, color=LETTERBOX_COLOR) -> None:
    """Write the letterboxed, normalised RGB image into ``out_chw: [3, H, W]`` float32 (``H, W`` =
    ``geo.input_hw``): one resize, one split into planes (the layout change, uint8), and per plane one
    convert-and-divide by 255 straight into the buffer, in RGB order; the borders get ``color / 255``.
    The values are those of ``to_input(letterbox(...))`` bit for bit (float32 ``u8 / 255``)."""
    top = geo.borders[0]
    left = geo.borders[2]
    src = _resized(im_bgr, geo)
    rh, rw = src.shape[:2]
    planes_bgr = cv2.split(src)  # 3 x [rh, rw] uint8
    for c in range(3):
        np.divide(planes_bgr[2 - c], 255.0, out=out_chw[c, top : top + rh, left : left + rw], dtype=np.float32)
    for c, value in enumerate(color[::-1]):  # RGB channel c has the BGR colour's entry 2 - c
        v = np.float32(value) / np.float32(255.0)
        plane = out_chw[c]
        plane[:top] = v
        plane[top + rh :] = v
        plane[top : top + rh, :left] = v
        plane[top : top + rh, left + rw :] = v


def preprocess(
    im_bgr: np.ndarray, img_size_hw: tuple[int, int], stride: int = 32, auto: bool = True, scaleup: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, LetterboxMeta]:
    """Letterbox and normalise one BGR image: ``(chw float32 RGB 0..1, LetterboxMeta)``.

    ``out``: a ``[3, H, W]`` float32 buffer to write into (reused from call to call by batch loops);
    it must have the letterboxed shape, else :class:`YoloportError`. Without it a new array is made.
    """
    if im_bgr.ndim != 3 or im_bgr.shape[2] != 3:
        raise YoloportError(f"preprocess takes a BGR image [H, W, 3], got an array of shape {list(im_bgr.shape)}")
    geo = letterbox_geometry(im_bgr.shape[:2], img_size_hw, auto, scaleup, stride)
    shape = (3, *geo.input_hw)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise YoloportError(f"preprocess buffer is {out.dtype}{list(out.shape)}, the letterboxed image needs float32{list(shape)}")
    _fill_input(out, im_bgr, geo)
    meta = LetterboxMeta(tuple(im_bgr.shape[:2]), geo.input_hw, float(geo.ratio), geo.pad)
    return out, meta


def preprocess_batch(
    images_bgr: list, img_size_hw: tuple[int, int], stride: int = 32, scaleup: bool = True, out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[LetterboxMeta]]:
    """Letterbox ``B`` BGR images into one fixed-shape batch ``[B, 3, H, W]`` (``auto=False``), written into
    ``out`` when given (a reused buffer of that shape) -> ``(batch, metas)``."""
    shape = (len(images_bgr), 3, int(img_size_hw[0]), int(img_size_hw[1]))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise YoloportError(f"preprocess buffer is {out.dtype}{list(out.shape)}, the batch needs float32{list(shape)}")
    metas = [preprocess(im, img_size_hw, stride, auto=False, scaleup=scaleup, out=out[i])[1] for i, im in enumerate(images_bgr)]
    return out, metas
