"""YOLO-format datasets for validation: data YAML, image lists, label files, rectangular batches.

The behaviour to match is Ultralytics YOLOv5 v7.0 (``val.py`` with ``LoadImagesAndLabels(rect=True,
pad=0.5)``):

- a data YAML names ``path`` and the ``train``/``val``/``test`` splits (a folder, a list of folders,
  or a ``.txt`` list of image files); labels live next to the images with ``/images/`` replaced by
  ``/labels/`` and the suffix by ``.txt``, one ``cls xc yc w h`` line per box, normalised;
- validation sorts the images by aspect ratio and gives each batch of ``batch_size`` images one
  shape, ``ceil(shape * img_size / stride + pad) * stride``; every image is first resized so its
  long side is ``img_size`` (``load_image``: ``int()`` sizes, INTER_AREA when shrinking) and then
  letterboxed into its batch shape without upscaling.

Where yoloport differs on purpose: a malformed label line is reported as ``file:line: reason`` and
only that line is dropped (Ultralytics drops the whole image and says only "corrupt"), unless
``strict`` is set, which raises. Besides the Ultralytics rectangular mode there is a square mode
and a fixed ``(h, w)`` mode for backends with static input shapes; the fixed mode letterboxes the
original image straight into that shape through :func:`yoloport.data.letterbox.preprocess`, the
same path as detect and calibration use.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np
import yaml

from ..errors import YoloportError
from ..ops.boxes import clip_boxes, xywhn2xyxy
from .letterbox import letterbox, to_input

IMG_FORMATS = ("bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp")
SPLITS = ("train", "val", "test")
MIN_IMAGE_SIDE = 10  # Ultralytics rejects images smaller than 10 px


# ----------------------------------------------------------------------------------------- data YAML
@dataclass
class DataConfig:
    """A parsed data YAML. Split entries are absolute ``Path`` lists (``None`` when not given)."""

    root: Path
    names: list[str]
    train: list[Path] | None = None
    val: list[Path] | None = None
    test: list[Path] | None = None
    yaml_file: Path | None = None

    @property
    def nc(self) -> int:
        return len(self.names)

    def split(self, name: str) -> list[Path]:
        """The entries of split ``name``; a YoloportError if the YAML has none."""
        if name not in SPLITS:
            raise YoloportError(f"unknown split '{name}': choose one of {', '.join(SPLITS)}")
        entries = getattr(self, name)
        if not entries:
            raise YoloportError(f"{self.yaml_file or 'data config'}: no '{name}' split")
        return entries


def _check_nc(nc, yaml_file) -> int | None:
    """``nc`` from a data YAML: absent, or a positive whole number."""
    if nc is None:
        return None
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise YoloportError(f"{yaml_file}: 'nc' must be a positive whole number (the class count), got {nc!r}")
    return nc


def _names_from(raw, nc, yaml_file) -> list[str]:
    nc = _check_nc(nc, yaml_file)
    if raw is None:
        if nc is None:
            raise YoloportError(f"{yaml_file}: needs 'names' (or at least 'nc')")
        return [f"class{i}" for i in range(int(nc))]
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise YoloportError(f"{yaml_file}: 'names' keys must be class indices 0..nc-1") from None
        if keys != list(range(len(keys))):
            raise YoloportError(f"{yaml_file}: 'names' keys must be 0..{len(keys) - 1} without gaps, got {keys}")
        names = [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    elif isinstance(raw, (list, tuple)):
        names = [str(n) for n in raw]
    else:
        raise YoloportError(f"{yaml_file}: 'names' must be a list or a {{index: name}} mapping")
    if nc is not None and int(nc) != len(names):
        raise YoloportError(f"{yaml_file}: nc is {nc} but {len(names)} names are given")
    if not names:
        raise YoloportError(f"{yaml_file}: 'names' is empty")
    return names


def load_data_yaml(path: str | os.PathLike) -> DataConfig:
    """Read an Ultralytics data YAML (``path``, ``train``, ``val``, ``test``, ``names``, ``nc``).

    ``path`` (the dataset root) is relative to the YAML's folder when not absolute (missing = that
    folder); split entries are relative to the root. Every split entry must exist.
    """
    yaml_file = Path(path)
    if not yaml_file.is_file():
        raise YoloportError(f"data YAML not found: {yaml_file}")
    try:
        raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise YoloportError(f"{yaml_file}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise YoloportError(f"{yaml_file}: expected a mapping with 'path', 'train', 'val' and 'names'")
    names = _names_from(raw.get("names"), raw.get("nc"), yaml_file)
    root = Path(str(raw.get("path") or "")).expanduser()
    if not root.is_absolute():
        root = (yaml_file.resolve().parent / root).resolve()
    splits: dict[str, list[Path] | None] = {}
    for s in SPLITS:
        spec = raw.get(s)
        if spec in (None, "", []):
            splits[s] = None
            continue
        items = spec if isinstance(spec, (list, tuple)) else [spec]
        entries = []
        for it in items:
            p = Path(str(it)).expanduser()
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise YoloportError(f"{yaml_file}: {s} entry '{it}' does not exist ({p})")
            entries.append(p)
        splits[s] = entries
    if splits["val"] is None and splits["train"] is None and splits["test"] is None:
        raise YoloportError(f"{yaml_file}: no 'train', 'val' or 'test' split")
    return DataConfig(root=root, names=names, yaml_file=yaml_file, **splits)


# ------------------------------------------------------------------------------------ files, labels
def img2label_path(img_path: str | os.PathLike) -> Path:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (the last ``/images/`` is replaced)."""
    s = str(img_path)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, tail = s.rsplit(sa, 1)
        s = head + sb + tail
    return Path(os.path.splitext(s)[0] + ".txt")


def _is_image(p: str) -> bool:
    return p.rsplit(".", 1)[-1].lower() in IMG_FORMATS if "." in p else False


def list_images(split_spec, missing: list[str] | None = None) -> list[Path]:
    """Image files of a split, sorted (jpg, jpeg, png, bmp, tif, tiff, webp).

    ``split_spec`` is a folder (searched recursively), a ``.txt`` file listing images (``./x`` and
    relative lines are relative to the list's folder), an image file, or a list of those. Listed
    files that do not exist are appended to ``missing`` when given (else ignored). A spec entry
    that does not exist, or a split with no image, is a YoloportError.
    """
    specs = split_spec if isinstance(split_spec, (list, tuple)) else [split_spec]
    found: list[str] = []
    if missing is None:
        missing = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found += [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if _is_image(f)]
        elif p.is_file():
            if _is_image(p.name):
                found.append(str(p))
                continue
            parent = p.parent
            for line in p.read_text(encoding="utf-8").strip().splitlines():
                line = line.strip()
                if not line or not _is_image(line):
                    continue
                q = Path(line)
                if not q.is_absolute():
                    q = parent / (line[2:] if line.startswith("./") else line)
                (found if q.is_file() else missing).append(str(q))
        else:
            raise YoloportError(f"image source does not exist: {p}")
    if not found:
        raise YoloportError(f"no images ({', '.join(IMG_FORMATS)}) in {', '.join(str(s) for s in specs)}")
    return [Path(f) for f in sorted(set(found))]


def segments2boxes_xywhn(segments: list[np.ndarray]) -> np.ndarray:
    """Polygons ``[k, 2]`` (normalised xy) -> ``[n, 4]`` xywhn boxes enclosing them."""
    out = np.zeros((len(segments), 4), np.float32)
    for i, s in enumerate(segments):
        x1, y1 = s.min(0)
        x2, y2 = s.max(0)
        out[i] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return out


def read_label_text(txt: Path) -> str:
    """The text of a label file; a missing or unreadable file is one YoloportError."""
    try:
        return txt.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YoloportError(f"label file not found: {txt}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise YoloportError(f"{txt}: cannot read label file ({e})") from None


def read_labels(txt: str | os.PathLike, nc: int) -> tuple[np.ndarray, list[str]]:
    """Parse a YOLO label file -> ``(labels [n, 5] float32 (cls, xc, yc, w, h), problems)``.

    Each bad line is left out and reported as ``"file:line: reason"``: wrong column count,
    non-numeric value, class not an integer in ``0..nc-1``, a coordinate outside ``[0, 1]`` (the
    range Ultralytics accepts for xc, yc, w, h), zero or negative size. Polygon lines (``cls x1 y1
    x2 y2 ...``, more than 6 columns) become their enclosing box, as in Ultralytics. Duplicate rows
    are removed with ``np.unique`` as Ultralytics does (which also sorts the rows) and reported.
    A missing file is a YoloportError; an empty file gives ``[0, 5]``.
    """
    txt = Path(txt)
    text = read_label_text(txt)
    rows: list[np.ndarray] = []
    line_nos: list[int] = []
    problems: list[str] = []
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{txt}:{no}"
        n = len(parts)
        if n != 5 and (n < 7 or n % 2 == 0):
            problems.append(f"{where}: expected 5 columns (cls xc yc w h) or a polygon, got {n}")
            continue
        try:
            vals = np.array([float(v) for v in parts], dtype=np.float64)
        except ValueError:
            bad = next(v for v in parts if not is_number(v))
            problems.append(f"{where}: non-numeric value '{bad}'")
            continue
        if not np.isfinite(vals).all():
            problems.append(f"{where}: non-finite value")
            continue
        c = vals[0]
        if c != int(c) or not 0 <= c < nc:
            problems.append(f"{where}: class {parts[0]} is not in 0..{nc - 1}")
            continue
        if n == 5:
            box = vals[1:].astype(np.float32)
        else:
            seg = vals[1:].astype(np.float32).reshape(-1, 2)
            if (seg < 0).any() or (seg > 1).any():
                problems.append(f"{where}: polygon coordinates outside [0, 1]")
                continue
            box = segments2boxes_xywhn([seg])[0]
        if (box < 0).any() or (box > 1).any():
            problems.append(f"{where}: coordinates outside [0, 1] (normalised xc yc w h expected): {parts[1:5]}")
            continue
        if box[2] <= 0 or box[3] <= 0:
            problems.append(f"{where}: zero or negative box size (w={box[2]:g}, h={box[3]:g})")
            continue
        rows.append(np.concatenate([[np.float32(c)], box]).astype(np.float32))
        line_nos.append(no)
    if not rows:
        return np.zeros((0, 5), np.float32), problems
    labels = np.stack(rows).astype(np.float32)
    _, first = np.unique(labels, axis=0, return_index=True)
    if len(first) < len(labels):
        keep = set(first.tolist())
        for k in range(len(labels)):
            if k not in keep:
                dup_of = next(j for j in range(k) if (labels[j] == labels[k]).all())
                problems.append(f"{txt}:{line_nos[k]}: duplicate of line {line_nos[dup_of]}, removed")
        labels = labels[first]  # sorted unique rows, as Ultralytics
    return labels, problems


def _read_split_labels(txt: Path, nc: int, nkpt: int) -> tuple[np.ndarray, list[str]]:
    """Detector labels (``nkpt == 0``) or face labels with ``nkpt`` landmarks, as the model's head says."""
    if nkpt:
        from .face_labels import read_face_labels

        return read_face_labels(txt, nc, nkpt)
    return read_labels(txt, nc)


def is_number(v: str) -> bool:
    """Whether ``float(v)`` accepts the text ``v`` (one label value)."""
    try:
        float(v)
        return True
    except ValueError:
        return False


def image_size_wh(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(w, h)`` of an image from its header (EXIF rotation applied), or None if unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - broken EXIF: no rotation, as Ultralytics
                orient = 1
        if orient in (5, 6, 7, 8):
            w, h = h, w
        return int(w), int(h)
    except ImportError:
        im = cv2.imread(str(path))
        return None if im is None else (im.shape[1], im.shape[0])
    except Exception:  # noqa: BLE001 - any decoder error means "unreadable image"
        return None


# ------------------------------------------------------------------------------------ loading
def load_image(path: str | os.PathLike, img_size: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Read a BGR image and resize it so its long side is ``img_size``: ``(im, (h0, w0), (h, w))``.

    As Ultralytics v7.0 ``load_image``: ``r = img_size / max(h0, w0)``, new size ``int(w0 * r),
    int(h0 * r)`` (v7.0 truncates; ``math.ceil`` came later), INTER_LINEAR when enlarging and
    INTER_AREA when shrinking.
    """
    im = read_image(path)
    h0, w0 = im.shape[:2]
    r = img_size / max(h0, w0)
    if r != 1:
        interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
        im = cv2.resize(im, (max(int(w0 * r), 1), max(int(h0 * r), 1)), interpolation=interp)
    return im, (h0, w0), im.shape[:2]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """BGR uint8 HWC image, EXIF orientation applied (OpenCV's default); YoloportError if unreadable."""
    from .sources import require_image

    return require_image(path)


def rect_batch_shapes(
    shapes_wh: np.ndarray, batch_size: int, img_size: int, stride: int = 32, pad: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics' rectangular batches: ``(order, batch_index, batch_shapes_hw)``.

    ``shapes_wh: [n, 2]`` image sizes. Images are ordered by aspect ratio ``h / w`` (``order``:
    indices into the input, numpy's default argsort as Ultralytics); image ``order[k]`` goes to
    batch ``k // batch_size``; each batch gets ``ceil([h, w] * img_size / stride + pad) * stride``
    with ``[h, w] = [max_ar, 1]`` when all are landscape, ``[1, 1 / min_ar]`` when all are portrait,
    else ``[1, 1]``. Returns ``order [n]``, ``batch_index [n]`` (per sorted image),
    ``batch_shapes_hw [nb, 2]`` int.
    """
    s = np.asarray(shapes_wh, dtype=np.float64)
    ar = s[:, 1] / s[:, 0]
    order = ar.argsort()
    ar = ar[order]
    bi = np.floor(np.arange(len(s)) / batch_size).astype(int)
    nb = int(bi[-1]) + 1 if len(bi) else 0
    rel = np.ones((nb, 2))
    for i in range(nb):
        ari = ar[bi == i]
        mini, maxi = ari.min(), ari.max()
        if maxi < 1:
            rel[i] = [maxi, 1]
        elif mini > 1:
            rel[i] = [1, 1 / mini]
    shapes = np.ceil(rel * img_size / stride + pad).astype(int) * stride
    return order, bi, shapes


class Batch(NamedTuple):
    """One validation batch.

    ``images``: float32 ``[B, 3, H, W]`` RGB 0..1. ``targets``: float32 ``[n, 6]`` rows
    ``(image index in batch, cls, x1, y1, x2, y2)`` in input pixels (clipped to the input).
    ``paths``: ``B`` image paths. ``shapes``: per image ``((h0, w0), ((ratio_h, ratio_w), (padw, padh)))``
    (the Ultralytics ``shapes`` tuple, for :func:`yoloport.ops.boxes.scale_boxes`).
    ``load_s``: seconds spent reading and letterboxing.
    """

    images: np.ndarray
    targets: np.ndarray
    paths: list[str]
    shapes: list[tuple]
    load_s: float


@dataclass
class DatasetReport:
    """What scanning a split found (all counts in images unless named otherwise)."""

    n_images: int = 0
    n_labels: int = 0
    n_missing_labels: int = 0  # images without a label file (background)
    n_empty_labels: int = 0  # images with an empty label file
    n_background: int = 0  # images with no label left (missing, empty, or only bad lines)
    n_skipped: int = 0  # listed but missing or unreadable images
    n_bad_lines: int = 0  # label lines dropped (malformed or duplicate)
    warnings: list[str] = field(default_factory=list)

    def console_warnings(self, examples: int = 3) -> list[str]:
        """The warnings that matter, for the console: counts first, then the first ``examples``
        ``file:line`` cases of each kind. Empty when there is nothing to say."""
        out = []
        if self.n_images and self.n_missing_labels == self.n_images:
            out.append(f"none of the {self.n_images} images has a label file (labels are looked for in the "
                       "'labels' folder beside 'images'): every image counts as background, so the metrics are 0")
        elif self.n_images and self.n_labels == 0:
            out.append(f"the {self.n_images} images have no labels at all: the metrics are 0")
        skipped = [w for w in self.warnings if w.endswith(", skipped")]  # images; the rest are label lines
        kinds = (("label line(s) dropped", self.n_bad_lines, [w for w in self.warnings if w not in skipped]),
                 ("image(s) skipped", self.n_skipped, skipped))
        for what, n, cases in kinds:
            if n:
                out.append(f"{n} {what}" + (f"; first: {'; '.join(cases[:examples])}" if cases else ""))
        return out


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class ValDataset:
    """Images and labels of one split, served in validation batches.

    Modes: ``rect=True`` (Ultralytics' rectangular batches, the default of v7.0 ``val.py``),
    ``rect=False`` (square ``img_size``), or ``fixed_shape_hw=(h, w)`` (every image letterboxed to
    exactly that shape, for static-shape backends; overrides ``rect``).

    ``images``: a split spec for :func:`list_images` (folder, ``.txt`` list, or a list of those).
    ``strict``: raise a YoloportError on the first malformed label file instead of dropping lines.
    ``warn``: where :meth:`DatasetReport.console_warnings` go once the split is read (stderr).
    ``nkpt``: read the labels as faces with that many landmarks (:mod:`yoloport.data.face_labels`,
    rows ``[n, 5 + 2 * nkpt]``); 0 (the default) reads detector labels.
    """

    def __init__(
        self,
        images,
        nc: int,
        img_size: int = 640,
        batch_size: int = 8,
        stride: int = 32,
        rect: bool = True,
        pad: float = 0.5,
        fixed_shape_hw: tuple[int, int] | None = None,
        strict: bool = False,
        warn=_warn_stderr,
        nkpt: int = 0,
    ):
        if batch_size < 1:
            raise YoloportError(f"batch size must be >= 1, got {batch_size}")
        if img_size % stride and fixed_shape_hw is None:
            raise YoloportError(f"image size {img_size} is not a multiple of the stride {stride}")
        if fixed_shape_hw is not None:
            fixed_shape_hw = (int(fixed_shape_hw[0]), int(fixed_shape_hw[1]))
            if fixed_shape_hw[0] % stride or fixed_shape_hw[1] % stride:
                raise YoloportError(f"fixed input shape {fixed_shape_hw} (h, w) is not a multiple of the stride {stride}")
        self.nc, self.img_size, self.batch_size, self.stride = nc, img_size, batch_size, stride
        self.fixed_shape_hw = fixed_shape_hw
        self.rect = rect and fixed_shape_hw is None
        self.report = DatasetReport()
        missing: list[str] = []
        files = list_images(images, missing)
        rep = self.report
        for m in missing:
            rep.warnings.append(f"{m}: image listed but not found, skipped")
        rep.n_skipped += len(missing)

        self.files: list[Path] = []
        self.labels: list[np.ndarray] = []
        shapes = []
        for f in files:
            wh = image_size_wh(f)
            if wh is None or min(wh) < MIN_IMAGE_SIDE:
                rep.warnings.append(f"{f}: unreadable image{'' if wh is None else f' (size {wh[0]}x{wh[1]} < 10)'}, skipped")
                rep.n_skipped += 1
                continue
            lf = img2label_path(f)
            if lf.is_file():
                lb, problems = _read_split_labels(lf, nc, nkpt)
                if problems and strict:
                    raise YoloportError(f"{len(problems)} label problem(s); first: {problems[0]}")
                rep.n_bad_lines += len(problems)
                rep.warnings += problems
                if not len(lb) and not problems:
                    rep.n_empty_labels += 1
            else:
                lb = np.zeros((0, 5 + 2 * nkpt), np.float32)
                rep.n_missing_labels += 1
            rep.n_background += not len(lb)
            self.files.append(f)
            self.labels.append(lb)
            shapes.append(wh)
        if not self.files:
            raise YoloportError(f"no readable images in {images}")
        self.shapes_wh = np.array(shapes, dtype=np.int64)
        rep.n_images = len(self.files)
        rep.n_labels = int(sum(len(lb) for lb in self.labels))
        if warn:
            for message in rep.console_warnings():
                warn(message)

        n = len(self.files)
        if self.rect:
            order, bi, self.batch_shapes = rect_batch_shapes(self.shapes_wh, batch_size, img_size, stride, pad)
            self.files = [self.files[i] for i in order]
            self.labels = [self.labels[i] for i in order]
            self.shapes_wh = self.shapes_wh[order]
            self.batch_index = bi
        else:
            self.batch_index = np.arange(n) // batch_size
            shape = fixed_shape_hw or (img_size, img_size)
            self.batch_shapes = np.tile(np.array(shape, dtype=int), (int(self.batch_index[-1]) + 1, 1))

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.batch_shapes)

    @property
    def n_images(self) -> int:
        return len(self.files)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Image ``i`` (in batch order) -> ``(letterboxed BGR HWC uint8, labels [n, 5] (cls, xyxy input px), shapes)``."""
        path = self.files[i]
        if self.fixed_shape_hw is not None:
            im0 = read_image(path)
            h0, w0 = im0.shape[:2]
            im, ratio, pad = letterbox(im0, self.fixed_shape_hw, auto=False, scaleup=True, stride=self.stride)
            h, w = h0, w0  # labels scale with the letterbox ratio
        else:
            im, (h0, w0), (h, w) = load_image(path, self.img_size)
            shape = tuple(int(v) for v in self.batch_shapes[self.batch_index[i]])
            im, ratio, pad = letterbox(im, shape, auto=False, scaleup=False, stride=self.stride)
        lb = self.labels[i].copy()
        if len(lb):
            lb = lb[:, :5]  # the box (face labels' landmarks are not validated here)
            lb[:, 1:] = xywhn2xyxy(lb[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
            eps = 1e-3  # Ultralytics clips to (h - eps, w - eps) when re-normalising
            clip_boxes(lb[:, 1:], (im.shape[0] - eps, im.shape[1] - eps))
        if self.fixed_shape_hw is not None:
            shapes = ((h0, w0), ((ratio[0], ratio[1]), pad))
        else:
            shapes = ((h0, w0), ((h / h0, w / w0), pad))
        return im, lb, shapes

    def batches(self) -> Iterator[Batch]:
        """Yield :class:`Batch` es in order (the rectangular order when ``rect``)."""
        n = len(self.files)
        for b in range(len(self)):
            t0 = time.perf_counter()
            idx = range(b * self.batch_size, min((b + 1) * self.batch_size, n))
            ims, targets, paths, shapes = [], [], [], []
            for k, i in enumerate(idx):
                im, lb, sh = self.load(i)
                ims.append(to_input(im))
                if len(lb):
                    targets.append(np.concatenate([np.full((len(lb), 1), k, np.float32), lb], 1))
                paths.append(str(self.files[i]))
                shapes.append(sh)
            images = np.stack(ims)
            t = np.concatenate(targets, 0) if targets else np.zeros((0, 6), np.float32)
            yield Batch(images, t.astype(np.float32), paths, shapes, time.perf_counter() - t0)

    __iter__ = batches


__all__ = [
    "IMG_FORMATS",
    "Batch",
    "DataConfig",
    "DatasetReport",
    "ValDataset",
    "image_size_wh",
    "img2label_path",
    "list_images",
    "load_data_yaml",
    "load_image",
    "read_image",
    "read_labels",
    "rect_batch_shapes",
    "segments2boxes_xywhn",
]
