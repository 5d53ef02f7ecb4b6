"""A deterministic synthetic YOLO detection dataset: coloured shapes on cluttered backgrounds.

:func:`make_synthetic_dataset` writes an Ultralytics-format dataset::

    out/images/<split>/000000.jpg    BGR images, any W x H (736 x 416 is fine)
    out/labels/<split>/000000.txt    one line per object: ``cls xc yc w h`` normalised, 6 decimals
    out/data.yaml                    path (absolute), train, val, nc, names (a list)
    out/synth.json                   how it was made (seed, sizes, counts per class); marks the
                                     directory as a synthetic dataset that may be regenerated

The task is a real, small detection problem: six shape classes (:data:`SHAPE_CLASSES`) of
varied size (from 8 px), aspect, colour, shading and rotation, 0-12 objects per image, drawn over
gradients, soft blobs, low-frequency texture and thin lines, then Gaussian noise, optional blur and
JPEG compression.

**Boxes are the visible extent.** Later shapes are drawn over earlier ones; every label is the
tight box (pixel edges, clipped to the image) of the pixels where the object is still visible.
A candidate shape is not drawn at all if it would leave itself or any earlier object with less
than ``min_visible`` (30 %) of its pixels visible (occlusion or the image border), so no
unlabelled shape fragments remain in an image.

**Determinism.** Each image is rendered from its own ``numpy.random.default_rng([seed,
crc32(split), index])``, so the same arguments give byte-identical files whatever the number of
worker processes, and splits are independent seed streams.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import YoloportError

SHAPE_CLASSES: tuple[str, ...] = ("circle", "rectangle", "triangle", "star", "cross", "ring")
"""Every class the generator can draw, in its default class-index order."""

MARKER_FILE = "synth.json"
"""The file that marks a directory as written by this module (and holds the dataset's report)."""

IMAGE_FORMATS = ("jpg", "png")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_MIN_SIDE, _MAX_SIDE = 32, 8192


@dataclass(frozen=True)
class RenderOptions:
    """What one image may contain (all sizes in pixels)."""

    class_shapes: tuple[str, ...] = SHAPE_CLASSES  # class index -> shape name
    max_objects: int = 12  # objects per image are drawn from 1..max_objects (or 0, see below)
    background_prob: float = 0.05  # chance of an image with no objects at all
    min_object_size: float = 8.0  # longest side of a shape before rotation, at least this
    max_object_frac: float = 0.5  # ... and at most this fraction of the image's shorter side
    min_visible: float = 0.3  # a shape must keep this fraction of its pixels visible


@dataclass
class SynthImage:
    """One rendered image and its ground truth.

    ``image``: uint8 ``[H, W, 3]`` (BGR, as written). ``boxes``: float32 ``[N, 4]`` xyxy pixels
    (pixel edges: a one-pixel object at column 5 spans x 5..6). ``classes``: int64 ``[N]``.
    ``colors``: uint8 ``[N, 3]`` base colour of each object (before shading and noise).
    ``owner``: int16 ``[H, W]``, the index into ``boxes`` of the object visible at each pixel, -1
    for background.
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    colors: np.ndarray
    owner: np.ndarray


# ----------------------------------------------------------------------------- arguments


def check_img_size_wh(img_size_wh: int | Sequence[int]) -> tuple[int, int]:
    """``W H`` (or one int for a square) -> ``(h, w)``; any size from 32 to 8192 per side."""
    vals = [img_size_wh] if isinstance(img_size_wh, (int, np.integer)) else list(img_size_wh)
    if len(vals) not in (1, 2) or not all(isinstance(v, (int, np.integer)) for v in vals):
        raise YoloportError(f"image size must be one integer or 'W H' integers, got {img_size_wh!r}")
    w, h = (int(vals[0]), int(vals[-1]))
    if not (_MIN_SIDE <= w <= _MAX_SIDE and _MIN_SIDE <= h <= _MAX_SIDE):
        raise YoloportError(f"image size must be {_MIN_SIDE}..{_MAX_SIDE} pixels per side, got {w}x{h}")
    return h, w


def resolve_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    """Class names to draw, in class-index order; ``None`` means all of :data:`SHAPE_CLASSES`."""
    if classes is None:
        return SHAPE_CLASSES
    names = tuple(classes)
    unknown = [c for c in names if c not in SHAPE_CLASSES]
    if unknown:
        raise YoloportError(f"unknown shape class {unknown[0]!r}; choose from {', '.join(SHAPE_CLASSES)}")
    if not names or len(set(names)) != len(names):
        raise YoloportError(f"classes must be distinct and at least one, got {list(names)}")
    return names


def _check_splits(n_images: int | Mapping[str, int], split: str) -> dict[str, int]:
    """``n_images`` (one split named ``split``) or ``{split: n}`` -> checked ``{split: n}``."""
    splits = dict(n_images) if isinstance(n_images, Mapping) else {split: n_images}
    if not splits:
        raise YoloportError("no split to generate")
    for name, n in splits.items():
        if not isinstance(name, str) or not _SPLIT_NAME.match(name):
            raise YoloportError(f"split names are letters, digits, '_' or '-', got {name!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise YoloportError(f"number of images must be an integer >= 1, got {n!r} for split {name!r}")
    return {k: int(v) for k, v in splits.items()}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: independent of other images, splits and workers."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode()), int(index)])


# ----------------------------------------------------------------------------- shapes


def _unit_polygons(shape: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Contours of ``shape`` in a unit box centred on 0 (x, y in -0.5..0.5), as ``(pts[K,2], fill)``.

    The mask is the contours filled in order with ``fill`` (1 draws, 0 cuts a hole).
    """
    if shape in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], 1) * 0.5
        if shape == "circle":
            return [(outer, 1)]
        return [(outer, 1), (outer * rng.uniform(0.45, 0.7), 0)]
    if shape == "rectangle":
        return [(np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]), 1)]
    if shape == "triangle":
        apex = rng.uniform(-0.35, 0.35)
        return [(np.array([[-0.5, 0.5], [0.5, 0.5], [apex, -0.5]]), 1)]
    if shape == "star":
        k = int(rng.integers(5, 7))  # 5 or 6 points
        inner = rng.uniform(0.38, 0.55)
        t = np.arange(2 * k) * np.pi / k - np.pi / 2
        r = np.where(np.arange(2 * k) % 2 == 0, 0.5, 0.5 * inner)
        return [(np.stack([np.cos(t) * r, np.sin(t) * r], 1), 1)]
    if shape == "cross":
        a = rng.uniform(0.12, 0.22)  # half arm thickness
        pts = [(-a, -0.5), (a, -0.5), (a, -a), (0.5, -a), (0.5, a), (a, a),
               (a, 0.5), (-a, 0.5), (-a, a), (-0.5, a), (-0.5, -a), (-a, -a)]
        return [(np.array(pts, dtype=np.float64), 1)]
    raise ValueError(f"unknown shape {shape!r}")


def _shape_geometry(shape: str, size: float, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """Contours of one shape in pixels around (0, 0): scaled to ``size`` (longest side), a random
    aspect (circles and stars stay round), rotated by a random angle."""
    max_aspect = {"circle": 1.0, "star": 1.15, "cross": 1.6}.get(shape, 2.5)
    aspect = float(np.exp(rng.uniform(0, np.log(max_aspect)))) if max_aspect > 1 else 1.0
    aspect = min(aspect, max(1.0, size / 5.0))  # keep the short side >= ~5 px
    sx, sy = (size, size / aspect) if rng.random() < 0.5 else (size / aspect, size)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return [((pts * (sx, sy)) @ rot.T, fill) for pts, fill in _unit_polygons(shape, rng)]


def _rasterize(contours: list[tuple[np.ndarray, int]], cx: float, cy: float) -> tuple[np.ndarray, int, int]:
    """Fill ``contours`` centred at ``(cx, cy)`` -> ``(mask uint8 [h, w], x0, y0)``: the mask covers
    the shape's whole bounding box (it may lie partly outside the image), origin at pixel (x0, y0)."""
    allpts = np.concatenate([p for p, _ in contours]) + (cx, cy)
    x0, y0 = np.floor(allpts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(allpts.max(0)).astype(int) + 1
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    shift = 4  # sub-pixel vertex precision (1/16 px); pixel centres sit at +0.5
    for pts, fill in contours:
        fixed = np.round((pts + (cx - x0 - 0.5, cy - y0 - 0.5)) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [fixed], int(fill), lineType=cv2.LINE_8, shift=shift)
    return mask, int(x0), int(y0)


def _clip_to_image(x0: int, y0: int, mh: int, mw: int, hw: tuple[int, int]):
    """Overlap of a mask at ``(x0, y0)`` with the image -> ``(image slices, mask slices)`` or None."""
    h, w = hw
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + mw, w), min(y0 + mh, h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


# ----------------------------------------------------------------------------- background


def _background(hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A cluttered float32 ``[H, W, 3]`` background: gradient, soft blobs, texture, thin lines."""
    h, w = hw
    sh, sw = max(h // 4, 8), max(w // 4, 8)  # soft parts are made at 1/4 size, then upsampled
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    t = (np.cos(ang) * xx / sw + np.sin(ang) * yy / sh)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    small = c0 + (c1 - c0) * t[..., None]
    for _ in range(int(rng.integers(0, 12))):  # soft blobs (not shapes: blurred, irregular)
        centre = (int(rng.integers(0, sw)), int(rng.integers(0, sh)))
        axes = (int(rng.integers(2, max(3, sw // 4))), int(rng.integers(2, max(3, sh // 4))))
        cv2.ellipse(small, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    rng.uniform(0, 255, 3).tolist(), -1)
    small = cv2.GaussianBlur(small, (0, 0), float(rng.uniform(1.0, 3.0)))
    gh, gw = max(sh // 8, 2), max(sw // 8, 2)  # low-frequency texture
    small += cv2.resize(rng.normal(0, rng.uniform(5, 30), (gh, gw, 3)).astype(np.float32), (sw, sh),
                        interpolation=cv2.INTER_CUBIC)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(0, 10))):  # thin lines (clutter that is not an object)
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _contrasting_color(region_mean: np.ndarray, rng: np.random.Generator, tries: int = 6) -> np.ndarray:
    """A random colour, the farthest (L1) from ``region_mean`` out of a few draws."""
    cands = rng.uniform(0, 255, (tries, 3)).astype(np.float32)
    return cands[np.argmax(np.abs(cands - region_mean).sum(1))]


# ----------------------------------------------------------------------------- one image


def render_image(hw: tuple[int, int], rng: np.random.Generator, options: RenderOptions = RenderOptions()) -> SynthImage:
    """Render one image of size ``hw = (h, w)`` from ``rng``; see the module docstring."""
    h, w = hw
    img = _background(hw, rng)
    owner = np.full((h, w), -1, np.int16)
    nc = len(options.class_shapes)
    n_target = 0 if rng.random() < options.background_prob else int(rng.integers(1, options.max_objects + 1))
    max_size = max(options.min_object_size * 1.5, options.max_object_frac * min(h, w))
    full_area: list[int] = []
    visible: list[int] = []
    regions: list[tuple[slice, slice]] = []
    classes: list[int] = []
    colors: list[np.ndarray] = []
    for _ in range(4 * n_target):
        if len(classes) == n_target:
            break
        cls = int(rng.integers(0, nc))
        size = float(np.exp(rng.uniform(np.log(options.min_object_size), np.log(max_size))))
        contours = _shape_geometry(options.class_shapes[cls], size, rng)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        mask, x0, y0 = _rasterize(contours, cx, cy)
        area = int(np.count_nonzero(mask))
        clip = _clip_to_image(x0, y0, *mask.shape, hw)
        if area < 16 or clip is None:
            continue
        isl, msl = clip
        m = mask[msl].astype(bool)
        if np.count_nonzero(m) < options.min_visible * area:
            continue  # mostly outside the image
        covered = np.bincount(owner[isl][m].astype(np.int64) + 1, minlength=len(classes) + 1)[1:]
        remaining = np.asarray(visible, np.int64) - covered
        if np.any(remaining < options.min_visible * np.asarray(full_area, np.float64)):
            continue  # would hide too much of an earlier object
        region = img[isl]
        color = _contrasting_color(region[m].mean(0), rng)
        # shading: a linear ramp across the shape, +-25 % of the colour at most
        ys, xs = np.nonzero(m)
        ang = rng.uniform(0, 2 * np.pi)
        proj = np.cos(ang) * xs + np.sin(ang) * ys
        proj = (proj - proj.mean()) / max(float(np.ptp(proj)), 1.0)
        shade = 1.0 + rng.uniform(0, 0.5) * proj
        region[ys, xs] = np.clip(color[None] * shade[:, None].astype(np.float32), 0, 255)
        owner[isl][m] = len(classes)
        visible = list(remaining) + [int(np.count_nonzero(m))]
        full_area.append(area)
        regions.append(isl)
        classes.append(cls)
        colors.append(color)

    boxes = np.zeros((len(classes), 4), np.float32)
    for k, (sy, sx) in enumerate(regions):
        ys, xs = np.nonzero(owner[sy, sx] == k)
        boxes[k] = (sx.start + xs.min(), sy.start + ys.min(), sx.start + xs.max() + 1, sy.start + ys.max() + 1)

    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(0, 12))
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (3, 3), float(rng.uniform(0.4, 0.9)))
    return SynthImage(out, boxes, np.asarray(classes, np.int64),
                      np.asarray(colors, np.float32).reshape(-1, 3).round().astype(np.uint8), owner)


def format_labels(boxes: np.ndarray, classes: np.ndarray, hw: tuple[int, int]) -> str:
    """YOLO label text for ``boxes[N, 4]`` xyxy pixels in an image of ``hw``: ``cls xc yc w h``
    normalised, 6 decimals, one line per box (empty string for no boxes)."""
    h, w = hw
    lines = []
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), classes.tolist()):
        lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n")
    return "".join(lines)


# ----------------------------------------------------------------------------- dataset


def _dataset_files(splits: Mapping[str, int], ext: str) -> list[str]:
    """Every file (relative path) a dataset with ``splits`` consists of, YAML and marker aside."""
    files = []
    for split, n in splits.items():
        for i in range(n):
            files += [f"images/{split}/{i:06d}.{ext}", f"labels/{split}/{i:06d}.txt"]
    return files


def _previous_dataset(out: Path) -> dict | None:
    """The marker of a synthetic dataset already in ``out``, or None if there is none (or it is unreadable)."""
    try:
        marker = json.loads((out / MARKER_FILE).read_text())
        splits = marker["splits"]
        ok = (marker.get("generator") == __name__ and marker.get("ext") in IMAGE_FORMATS
              and isinstance(splits, dict)
              and all(isinstance(k, str) and _SPLIT_NAME.match(k) and isinstance(v, int) for k, v in splits.items()))
        return marker if ok else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _prepare_out_dir(out: Path, overwrite: bool, planned: list[str]) -> None:
    """Make ``out`` ready: new or empty is fine; a previous synthetic dataset is removed file by file
    (only the files its marker lists: files synth itself wrote); any other non-empty directory needs
    ``overwrite`` and is written into, deleting and replacing nothing: if any of ``planned`` (relative
    paths this run writes) is already there, the run is refused before it writes anything."""
    if out.exists() and not out.is_dir():
        raise YoloportError(f"{out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    prev = _previous_dataset(out)
    if prev is None:
        if overwrite:
            from ..io.paths import refuse_existing_outputs

            try:
                refuse_existing_outputs([out / rel for rel in planned], overwrite=False)
            except YoloportError as e:
                raise YoloportError(f"{out}: {e.args[0].split('; ')[0]}; synth never replaces files it did not "
                                    "write: choose another --out") from None
            return
        raise YoloportError(f"{out} is not empty and is not a yoloport synthetic dataset; "
                            f"choose another --out or pass --overwrite (nothing there is deleted)")
    for rel in _dataset_files(prev["splits"], prev["ext"]) + ["data.yaml"]:
        (out / rel).unlink(missing_ok=True)
    for split in prev["splits"]:
        for d in (out / "images" / split, out / "labels" / split):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _write_one(job: tuple[Path, str, int, int, tuple[int, int], RenderOptions, str]) -> list[int]:
    """Render and write image ``index`` of ``split``; returns its objects' class indices."""
    out, split, index, seed, hw, options, ext = job
    rng = image_rng(seed, split, index)
    sample = render_image(hw, rng, options)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{ext}", sample.image, params)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise RuntimeError(f"OpenCV could not encode {ext}")
    (out / "images" / split / f"{index:06d}.{ext}").write_bytes(buf.tobytes())
    (out / "labels" / split / f"{index:06d}.txt").write_text(format_labels(sample.boxes, sample.classes, hw))
    return sample.classes.tolist()


def _worker_init() -> None:
    """One OpenCV thread per worker process: the processes are the parallelism."""
    cv2.setNumThreads(1)


def _default_workers(n_total: int) -> int:
    """Worker processes for ``n_total`` images: one for a few (starting a process costs ~0.5 s)."""
    return 1 if n_total < 32 else max(1, min(os.cpu_count() or 1, 8))


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    n_images: int | Mapping[str, int],
    img_size_wh: int | Sequence[int] = (640, 640),
    *,
    seed: int = 0,
    split: str = "train",
    classes: Sequence[str] | None = None,
    max_objects: int = 12,
    min_object_size: float = 8.0,
    background_prob: float = 0.05,
    image_format: str = "jpg",
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic YOLO dataset into ``out_dir`` and return the path of its ``data.yaml``.

    Args:
        out_dir: new, empty, or a previous synthetic dataset (its files are replaced). Any other
            non-empty directory is refused unless ``overwrite``; then files are written into it and
            nothing of the user's is deleted or replaced (a same-named file there refuses the run).
        n_images: images in the split named ``split``, or ``{split: n_images}`` for several splits
            (e.g. ``{"train": 200, "val": 40}``).
        img_size_wh: ``(W, H)`` of every image, or one int for square images.
        seed: the dataset's seed; image ``i`` of ``split`` uses :func:`image_rng` ``(seed, split, i)``.
        classes: shape names (a subset of :data:`SHAPE_CLASSES`) in class-index order; default all.
        max_objects: objects per image are 1..max_objects (``background_prob`` of images have none).
        min_object_size: smallest longest side of a shape, pixels.
        image_format: ``"jpg"`` (random quality 70-95) or ``"png"``.
        workers: processes rendering images (default: CPU count, at most 8); output does not depend on it.
        overwrite: allow writing into a non-empty directory that is not a synthetic dataset.

    ``data.yaml`` has ``path`` (absolute), one key per split (``images/<split>``; ``train`` and ``val``
    fall back to the first split when not generated), ``nc`` and ``names``. ``synth.json`` next to it
    records the arguments and the per-split image, object and class counts.
    """
    splits = _check_splits(n_images, split)
    hw = check_img_size_wh(img_size_wh)
    names = resolve_classes(classes)
    if image_format not in IMAGE_FORMATS:
        raise YoloportError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if isinstance(max_objects, bool) or not isinstance(max_objects, (int, np.integer)) or max_objects < 1:
        raise YoloportError(f"max_objects must be an integer >= 1, got {max_objects!r}")
    if not 2.0 <= float(min_object_size) <= min(hw) / 3:
        raise YoloportError(f"min_object_size must be 2..{min(hw) // 3} px for a {hw[1]}x{hw[0]} image, got {min_object_size}")
    if not 0.0 <= float(background_prob) <= 1.0:
        raise YoloportError(f"background_prob must be in 0..1, got {background_prob}")
    options = RenderOptions(class_shapes=names, max_objects=int(max_objects), background_prob=float(background_prob),
                            min_object_size=float(min_object_size))

    out = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(out, overwrite, _dataset_files(splits, image_format) + ["data.yaml", MARKER_FILE])
    report = {"generator": __name__, "status": "incomplete", "seed": int(seed), "img_size_wh": [hw[1], hw[0]],
              "ext": image_format, "names": list(names), "max_objects": options.max_objects,
              "min_object_size": options.min_object_size, "background_prob": options.background_prob,
              "box_convention": "visible extent, tight, clipped to the image", "splits": splits}
    # the marker goes first, so an interrupted run still leaves a directory recognised as ours
    (out / MARKER_FILE).write_text(json.dumps(report, indent=2) + "\n")
    for s in splits:
        (out / "images" / s).mkdir(parents=True, exist_ok=True)
        (out / "labels" / s).mkdir(parents=True, exist_ok=True)

    jobs = [(out, s, i, int(seed), hw, options, image_format) for s, n in splits.items() for i in range(n)]
    workers = _default_workers(len(jobs)) if workers is None else max(1, int(workers))
    if workers == 1:
        results = [_write_one(j) for j in jobs]
    else:
        # spawn, not fork: forking a process that runs torch or OpenCV threads can deadlock
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            results = list(pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))

    counts, k = {}, 0
    for s, n in splits.items():
        per = results[k:k + n]
        k += n
        cls_counts = np.bincount(np.asarray([c for r in per for c in r], np.int64), minlength=len(names))
        counts[s] = {"images": n, "objects": int(cls_counts.sum()), "background_images": sum(not r for r in per),
                     "per_class": {name: int(c) for name, c in zip(names, cls_counts)}}

    first = next(iter(splits))
    data = {"path": str(out)}
    data.update({key: f"images/{key if key in splits else first}" for key in ("train", "val")})
    data.update({s: f"images/{s}" for s in splits if s not in data})
    data.update({"nc": len(names), "names": list(names)})
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    report.update(status="complete", counts=counts)
    (out / MARKER_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return yaml_path


def read_synth_report(out_dir: str | os.PathLike) -> dict:
    """The ``synth.json`` report of a dataset written by :func:`make_synthetic_dataset`."""
    marker = _previous_dataset(Path(out_dir))
    if marker is None:
        raise YoloportError(f"{out_dir} holds no yoloport synthetic dataset ({MARKER_FILE} missing or unreadable)")
    return marker
