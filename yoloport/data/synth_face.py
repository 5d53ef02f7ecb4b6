"""A deterministic synthetic face dataset: drawn face-like objects with five exactly known landmarks.

:func:`make_face_dataset` writes yolov5-face's layout (one folder per split, images beside labels, so
``yoloport val --task face --data out/val`` and a data YAML both read it)::

    out/<split>/images/000000.jpg   BGR images, any W x H
    out/<split>/labels/000000.txt   one face a line: ``0 xc yc w h  x1 y1 ... x5 y5`` normalised (15 columns)
    out/data.yaml                   path (absolute), train, val (``<split>/images``), nc 1, names [face]
    out/synth.json                  how it was made; marks the folder as one this module may regenerate

A face is an ellipse (random size from ``min_face`` px, aspect, tone, shading and a tilt up to
``max_tilt`` degrees) with two eyes, a nose and a mouth drawn at known places in the face's own
frame; the five landmarks are yolov5-face's, in its order: left eye, right eye, nose, left and right
mouth corner ("left" = smaller x on an upright face, as the horizontal flip's swap assumes). Faces do
not overlap and lie wholly inside the image, so every label is exact: the box is the tight box of
the rotated ellipse (pixel-edge coordinates: a pixel ``i`` spans ``i .. i + 1``), the landmarks the
exact points the features are drawn around. Plain ellipses without features and the cluttered
backgrounds of :mod:`yoloport.data.synth` are the negatives; noise, blur and JPEG follow.

Image ``i`` of split ``s`` is rendered from its own ``numpy.random.default_rng([seed, crc32(s), i])``:
the same arguments give the same files, and different seeds or splits are independent.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import YoloportError
from .face_labels import format_face_labels
from .synth import _background, _contrasting_color, check_img_size_wh, image_rng

NAMES = ("face",)
NKPT = 5
MARKER_FILE = "synth.json"
GENERATOR = __name__

# Landmarks in the face's own frame, in units of the ellipse's semi-axes (x right, y down):
# left eye, right eye, nose tip, left mouth corner, right mouth corner.
LANDMARKS_UNIT = np.array([[-0.36, -0.22], [0.36, -0.22], [0.0, 0.14], [-0.3, 0.48], [0.3, 0.48]], np.float64)
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing
_SCALE = 1 << _SHIFT


@dataclass(frozen=True)
class FaceOptions:
    """What one image may contain (sizes in pixels)."""

    max_faces: int = 6  # faces per image: 1..max_faces (or none, see background_prob)
    background_prob: float = 0.05  # an image without faces
    min_face: float = 12.0  # smallest face height
    max_face_frac: float = 0.6  # largest face height, as a fraction of the image's shorter side
    max_tilt: float = 25.0  # degrees
    distractors: int = 3  # featureless ellipses per image: up to this many


@dataclass
class FaceImage:
    """One rendered image: ``image`` uint8 ``[H, W, 3]`` BGR; ``boxes`` float64 ``[N, 4]`` xyxy pixels;
    ``landmarks`` float64 ``[N, 5, 2]`` pixels (pixel-edge coordinates)."""

    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray

    def label_rows(self) -> np.ndarray:
        """``[N, 15]`` rows ``0 xc yc w h x1 y1 ... x5 y5`` normalised to the image."""
        h, w = self.image.shape[:2]
        b = self.boxes
        xywhn = np.stack(((b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                          (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h), 1)
        pts = (self.landmarks / np.array([w, h])).reshape(len(b), 2 * NKPT)
        return np.concatenate([np.zeros((len(b), 1)), xywhn, pts], 1)


def face_geometry(cx: float, cy: float, a: float, b: float, tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """An ellipse face centred at ``(cx, cy)`` with semi-axes ``a`` (x) and ``b`` (y), tilted by
    ``tilt_deg`` (clockwise on screen) -> ``(box [4] xyxy, landmarks [5, 2])`` exactly, in pixels."""
    t = math.radians(tilt_deg)
    c, s = math.cos(t), math.sin(t)
    half_w = math.sqrt((a * c) ** 2 + (b * s) ** 2)
    half_h = math.sqrt((a * s) ** 2 + (b * c) ** 2)
    local = LANDMARKS_UNIT * np.array([a, b])
    rot = np.array([[c, -s], [s, c]])
    pts = local @ rot.T + np.array([cx, cy])
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h]), pts


def _fx(p) -> tuple[int, int]:
    """A pixel-edge point -> cv2's fixed-point pixel-centre coordinates."""
    return int(round((p[0] - 0.5) * _SCALE)), int(round((p[1] - 0.5) * _SCALE))


def _ellipse(img, centre, axes, angle, color, thickness=-1) -> None:
    ax = (max(int(round(axes[0] * _SCALE)), 1), max(int(round(axes[1] * _SCALE)), 1))
    cv2.ellipse(img, _fx(centre), ax, angle, 0, 360, color, thickness, cv2.LINE_AA, _SHIFT)


def draw_face(img: np.ndarray, cx: float, cy: float, a: float, b: float, tilt: float, rng: np.random.Generator) -> None:
    """Draw one face (ellipse, shading, eyes, nose, mouth) on the float32 BGR ``img`` in place."""
    _, pts = face_geometry(cx, cy, a, b, tilt)
    x0, y0 = max(int(cx - max(a, b)) - 1, 0), max(int(cy - max(a, b)) - 1, 0)
    region = img[y0:int(cy + max(a, b)) + 2, x0:int(cx + max(a, b)) + 2]
    tone = _contrasting_color(region.reshape(-1, 3).mean(0), rng)
    _ellipse(img, (cx, cy), (a, b), tilt, tone.tolist())
    shade = np.clip(tone * rng.uniform(0.75, 1.15), 0, 255)  # a lighter or darker inner ellipse
    _ellipse(img, (cx - 0.1 * a, cy - 0.1 * b), (0.7 * a, 0.7 * b), tilt, shade.tolist())
    dark = np.clip(tone * rng.uniform(0.0, 0.35), 0, 255).tolist()
    eye = (max(0.13 * a, 0.8), max(0.08 * b, 0.6))
    for p in pts[:2]:  # eyes: a pale eyeball and a dark pupil centred on the landmark
        _ellipse(img, p, (eye[0] * 1.4, eye[1] * 1.4), tilt, np.clip(tone + 60, 0, 255).tolist())
        _ellipse(img, p, eye, tilt, dark)
    t = math.radians(tilt)
    up = np.array([math.sin(t), -math.cos(t)])  # the face's "up" direction on screen
    nose = np.array([pts[2] + up * 0.22 * b, pts[2] - 0.1 * a * np.array([math.cos(t), math.sin(t)]),
                     pts[2] + 0.1 * a * np.array([math.cos(t), math.sin(t)])])
    cv2.fillPoly(img, [np.array([_fx(q) for q in nose], np.int32)], dark, cv2.LINE_AA, _SHIFT)
    mid = (pts[3] + pts[4]) / 2 - up * rng.uniform(0.0, 0.12) * b  # a smile or a straight mouth
    mouth = np.array([_fx(q) for q in (pts[3], mid, pts[4])], np.int32)
    cv2.polylines(img, [mouth], False, dark, max(1, int(round(0.06 * b))), cv2.LINE_AA, _SHIFT)


def _overlaps(box: np.ndarray, boxes: list[np.ndarray], margin: float) -> bool:
    return any(box[0] < o[2] + margin and o[0] < box[2] + margin and box[1] < o[3] + margin and o[1] < box[3] + margin
               for o in boxes)


def render_face_image(hw: tuple[int, int], rng: np.random.Generator, options: FaceOptions = FaceOptions()) -> FaceImage:
    """Render one image of size ``hw = (h, w)`` from ``rng``; see the module docstring."""
    h, w = hw
    img = _background(hw, rng)
    n = 0 if rng.random() < options.background_prob else int(rng.integers(1, options.max_faces + 1))
    boxes: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    taken: list[np.ndarray] = []
    hi = max(options.min_face, options.max_face_frac * min(h, w))
    for _ in range(int(rng.integers(0, options.distractors + 1))):  # featureless ellipses (negatives)
        a, b = rng.uniform(3, hi / 3), rng.uniform(3, hi / 3)
        c = (rng.uniform(0, w), rng.uniform(0, h))
        _ellipse(img, c, (a, b), float(rng.uniform(0, 180)), rng.uniform(0, 255, 3).tolist())
    for _ in range(n):
        for _try in range(20):
            fh = math.exp(rng.uniform(math.log(options.min_face), math.log(hi)))
            b = fh / 2
            a = b * rng.uniform(0.68, 0.9)
            tilt = float(rng.uniform(-options.max_tilt, options.max_tilt))
            box, _ = face_geometry(0, 0, a, b, tilt)
            hw_half, hh_half = box[2], box[3]
            if 2 * hw_half >= w - 2 or 2 * hh_half >= h - 2:
                continue
            cx = rng.uniform(hw_half + 1, w - hw_half - 1)
            cy = rng.uniform(hh_half + 1, h - hh_half - 1)
            box, pts = face_geometry(cx, cy, a, b, tilt)
            if _overlaps(box, taken, margin=2.0):
                continue
            draw_face(img, cx, cy, a, b, tilt, rng)
            taken.append(box)
            boxes.append(box)
            marks.append(pts)
            break
    img += rng.normal(0, rng.uniform(0, 8), img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.0)))
    out = np.clip(img, 0, 255).astype(np.uint8)
    boxes_a = np.array(boxes, np.float64).reshape(-1, 4)
    marks_a = np.array(marks, np.float64).reshape(-1, NKPT, 2)
    return FaceImage(out, boxes_a, marks_a)


def _check_splits(splits: dict) -> dict[str, int]:
    if not isinstance(splits, dict) or not splits:
        raise YoloportError("give the number of images per split, e.g. {'train': 200, 'val': 40}")
    out = {}
    for s, n in splits.items():
        if not str(s).replace("_", "").replace("-", "").isalnum():
            raise YoloportError(f"split name {s!r}: letters, digits, '-' and '_' only")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise YoloportError(f"split {s}: the number of images must be a whole number >= 0, got {n!r}")
        out[str(s)] = int(n)
    return out


def _planned_files(splits: dict[str, int]) -> list[str]:
    return [f"{s}/{d}/{i:06d}.{ext}" for s, n in splits.items() for i in range(n)
            for d, ext in (("images", "jpg"), ("labels", "txt"))]


def _prepare_out_dir(out: Path, overwrite: bool, planned: list[str]) -> None:
    """New or empty: fine. A previous face dataset (its marker): its files are removed first (only the
    ones its marker lists). Anything else non-empty needs ``overwrite`` and then no planned file may
    exist there (nothing of the user's is deleted or replaced)."""
    if out.exists() and not out.is_dir():
        raise YoloportError(f"{out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    try:
        prev = json.loads((out / MARKER_FILE).read_text())
        prev_splits = _check_splits(prev["splits"]) if prev.get("generator") == GENERATOR else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, YoloportError):
        prev_splits = None
    if prev_splits is None:
        if not overwrite:
            raise YoloportError(f"{out} is not empty and is not a yoloport synthetic face dataset; "
                                "choose another --out or pass --overwrite (nothing there is deleted)")
        clash = [rel for rel in planned + ["data.yaml", MARKER_FILE] if (out / rel).exists()]
        if clash:
            raise YoloportError(f"{out}: {clash[0]} already exists; synth never replaces files it did not write: "
                                "choose another --out")
        return
    for rel in _planned_files(prev_splits) + ["data.yaml"]:
        (out / rel).unlink(missing_ok=True)


def make_face_dataset(out_dir: str | os.PathLike, splits: dict[str, int], img_size_wh=(320, 320), *, seed: int = 0,
                      options: FaceOptions = FaceOptions(), overwrite: bool = False) -> Path:
    """Write a synthetic face dataset (see the module docstring) and return its ``data.yaml``.

    ``splits``: images per split, e.g. ``{"train": 200, "val": 40}``; ``img_size_wh``: ``(W, H)`` or one
    int. ``train``/``val`` in the YAML fall back to the first split when not generated."""
    splits = _check_splits(splits)
    hw = check_img_size_wh(img_size_wh)
    if options.min_face < 6 or options.min_face > min(hw) / 2:
        raise YoloportError(f"the smallest face must be 6..{min(hw) // 2} px for a {hw[1]}x{hw[0]} image, "
                            f"got {options.min_face}")
    if options.max_faces < 1:
        raise YoloportError(f"max faces per image must be >= 1, got {options.max_faces}")
    out = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(out, overwrite, _planned_files(splits))
    report = {"generator": GENERATOR, "status": "incomplete", "seed": int(seed), "img_size_wh": [hw[1], hw[0]],
              "names": list(NAMES), "nkpt": NKPT, "splits": splits,
              "landmarks": "left eye, right eye, nose, left mouth corner, right mouth corner",
              "options": vars(options) if hasattr(options, "__dict__") else {}}
    (out / MARKER_FILE).write_text(json.dumps(report, indent=2) + "\n")
    counts = {}
    for s, n in splits.items():
        (out / s / "images").mkdir(parents=True, exist_ok=True)
        (out / s / "labels").mkdir(parents=True, exist_ok=True)
        faces = background = 0
        for i in range(n):
            rng = image_rng(seed, s, i)
            sample = render_face_image(hw, rng, options)
            ok, buf = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
            if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
                raise RuntimeError("OpenCV could not encode a JPEG")
            (out / s / "images" / f"{i:06d}.jpg").write_bytes(buf.tobytes())
            (out / s / "labels" / f"{i:06d}.txt").write_text(format_face_labels(sample.label_rows()))
            faces += len(sample.boxes)
            background += not len(sample.boxes)
        counts[s] = {"images": n, "faces": faces, "background_images": background}
    first = next(iter(splits))
    data = {"path": str(out)}
    data.update({k: f"{k if k in splits else first}/images" for k in ("train", "val")})
    data.update({s: f"{s}/images" for s in splits if s not in data})
    data.update({"nc": len(NAMES), "names": list(NAMES), "nkpt": NKPT})
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    report.update(status="complete", counts=counts)
    (out / MARKER_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return yaml_path
