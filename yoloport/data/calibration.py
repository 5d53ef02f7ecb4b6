"""Calibration sets for int8 quantization: which images, and exactly how they are preprocessed.

Every backend's quantizer (ONNX Runtime, NNCF/OpenVINO, RKNN, mlu-sim) draws its calibration
tensors from a :class:`CalibrationSet`, and every tensor comes out of
:func:`yoloport.data.letterbox.preprocess` with ``auto=False`` (letterboxed into the fixed
``img_size_hw``, RGB, 0..1, float32 ``[1, 3, H, W]``) - the same function detect and val use.
Calibration that preprocesses differently from inference is the classic silent int8 accuracy loss.

Sources (``load_calibration(source)``):

- an image folder (searched recursively),
- a glob (``imgs/*.jpg``, ``data/**/*.png``),
- a data YAML, optionally with a split: ``data.yaml`` (the ``train`` split), ``data.yaml:val``,
- a list file (RKNN's ``dataset.txt``): one image path per line, relative to the list file,
- a single image file, or a Python list of image paths.
"""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from ..errors import YoloportError
from .letterbox import preprocess
from .sources import read_image, require_image

IMG_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_YAML_SPLIT = "train"
PREPROCESSING = (
    "yoloport.data.letterbox.preprocess(auto=False): letterbox (grey 114, centred) into img_size, "
    "BGR->RGB, /255, float32 NCHW"
)


class CalibrationWarning(UserWarning):
    """A calibration set smaller than asked, or images that could not be read."""


@dataclass
class CalibrationSet:
    """The images a quantizer calibrates on and how each becomes a network input.

    ``paths``: the images used (all readable when the set was made). Iterating yields float32
    ``[1, 3, H, W]`` arrays made by :func:`~yoloport.data.letterbox.preprocess` (``auto=False``), in
    ``paths`` order; images are read again on every pass, so a set of hundreds costs no memory.
    """

    source: str
    paths: list[Path]
    img_size_hw: tuple[int, int]
    stride: int = 32
    requested: int = 0
    seed: int | None = 0
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths:
            yield self.load(p)

    def load(self, path) -> np.ndarray:
        """One image -> float32 ``[1, 3, H, W]`` (the one preprocessing path, fixed shape)."""
        im = require_image(path, "calibration image")
        chw, _ = preprocess(im, self.img_size_hw, stride=self.stride, auto=False)
        return chw[None]

    def arrays(self) -> list[np.ndarray]:
        """All calibration inputs as a list of float32 ``[1, 3, H, W]`` arrays."""
        return list(self)

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        """Inputs stacked ``batch_size`` at a time (the last batch may be smaller)."""
        buf: list[np.ndarray] = []
        for x in self:
            buf.append(x)
            if len(buf) == batch_size:
                yield np.concatenate(buf, 0)
                buf = []
        if buf:
            yield np.concatenate(buf, 0)

    def with_size(self, img_size_hw: tuple[int, int]) -> "CalibrationSet":
        """The same images at another input size (a copy)."""
        return CalibrationSet(
            self.source, list(self.paths), tuple(img_size_hw), self.stride, self.requested, self.seed,
            list(self.skipped), list(self.warnings),
        )

    def fingerprint(self) -> str:
        """A short sha256 over the chosen images' bytes (in ``paths`` order) and the input size: the same
        fingerprint means the same calibration inputs, whatever the files are called."""
        import hashlib

        h = hashlib.sha256(f"{self.img_size_hw[0]}x{self.img_size_hw[1]}/{self.stride}".encode())
        for p in self.paths:
            h.update(hashlib.sha256(Path(p).read_bytes()).digest() if Path(p).is_file() else str(p).encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        """What an artifact's sidecar records about its calibration."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint(),
            "count": len(self.paths),
            "requested": self.requested,
            "seed": self.seed,
            "paths": [str(p) for p in self.paths],
            "img_size": list(self.img_size_hw),
            "stride": self.stride,
            "skipped_unreadable": len(self.skipped),
            "preprocessing": PREPROCESSING,
            "warnings": list(self.warnings),
        }


# ----------------------------------------------------------------------------- sources


def _is_image(p) -> bool:
    return str(p).lower().endswith(IMG_SUFFIXES)


def _split_yaml_source(source: str) -> tuple[str, str] | None:
    """``data.yaml`` / ``data.yaml:val`` -> (yaml path, split); None if not a YAML source."""
    s = str(source)
    if ":" in s:
        head, tail = s.rsplit(":", 1)
        if head.lower().endswith(YAML_SUFFIXES) and tail and "/" not in tail and os.sep not in tail:
            return head, tail
    if s.lower().endswith(YAML_SUFFIXES):
        return s, DEFAULT_YAML_SPLIT
    return None


def read_list_file(path) -> tuple[list[Path], list[str]]:
    """An RKNN-style ``dataset.txt``: one image per line (the first field; ``#`` comments and blank
    lines ignored), relative paths relative to the list file. Returns ``(existing, missing)``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise YoloportError(f"cannot read calibration list file {p}: {e}") from None
    found, missing = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = line.split()[0]  # RKNN allows several inputs per line; we have one
        q = Path(entry).expanduser()
        if not q.is_absolute():
            q = p.parent / (entry[2:] if entry.startswith("./") else entry)
        (found if q.is_file() else missing).append(q if q.is_file() else str(q))
    return found, missing


def _images_in_dir(d: Path) -> list[Path]:
    return [Path(r) / f for r, _, fs in os.walk(d) for f in fs if _is_image(f)]


def _yaml_images(yaml_path: str, split: str) -> list[Path]:
    from .dataset import list_images, load_data_yaml

    cfg = load_data_yaml(yaml_path)
    return list_images(cfg.split(split))


def resolve_source(source) -> tuple[list[Path], list[str]]:
    """Candidate image paths of a calibration source: ``(paths, missing_entries)``.

    A source that does not exist, or holds no image, is a :class:`YoloportError`.
    """
    if isinstance(source, (list, tuple)):
        found, missing = [], []
        for s in source:
            f, m = resolve_source(s)
            found += f
            missing += m
        return found, missing
    s = str(source)
    ys = _split_yaml_source(s)
    if ys is not None and Path(ys[0]).is_file():
        return _yaml_images(*ys), []
    p = Path(s).expanduser()
    if p.is_dir():
        return _images_in_dir(p), []
    if p.is_file():
        if _is_image(p):
            return [p], []
        if ys is not None:
            return _yaml_images(*ys), []
        return read_list_file(p)
    if glob.has_magic(s):
        return [Path(q) for q in glob.glob(os.path.expanduser(s), recursive=True) if _is_image(q) and os.path.isfile(q)], []
    if ys is not None:
        raise YoloportError(f"calibration data YAML {ys[0]} does not exist")
    raise YoloportError(f"calibration source {s} does not exist (give an image folder, a glob, a data YAML or a list file)")


def _readable(path) -> bool:
    return read_image(path) is not None


def _default_warn(msg: str) -> None:
    warnings.warn(msg, CalibrationWarning, stacklevel=3)


def load_calibration(
    source,
    n: int = 100,
    img_size_hw: tuple[int, int] = (640, 640),
    stride: int = 32,
    seed: int | None = 0,
    warn: Callable[[str], None] | None = None,
) -> CalibrationSet:
    """Pick up to ``n`` readable images from ``source`` for calibration.

    With more candidates than ``n``, a random sample (``seed``; ``seed=None`` takes the first ``n``
    in sorted order) is drawn; unreadable images are skipped and replaced by others when there are
    any. Fewer usable images than ``n`` is a warning (through ``warn``, default
    :class:`CalibrationWarning`), none at all a :class:`YoloportError`.
    """
    warn = warn or _default_warn
    if n is None or int(n) < 1:
        raise YoloportError(f"the number of calibration images must be at least 1, got {n}")
    n = int(n)
    img_size_hw = (int(img_size_hw[0]), int(img_size_hw[1]))
    if img_size_hw[0] % stride or img_size_hw[1] % stride:
        raise YoloportError(f"calibration image size {img_size_hw[1]}x{img_size_hw[0]} is not a multiple of the stride {stride}")
    label = ", ".join(map(str, source)) if isinstance(source, (list, tuple)) else str(source)
    candidates, missing = resolve_source(source)
    candidates = sorted(set(Path(c) for c in candidates))
    if not candidates:
        raise YoloportError(f"calibration source {label} holds no image ({', '.join(IMG_SUFFIXES)})")
    notes: list[str] = []
    if missing:
        notes.append(f"{len(missing)} listed calibration image(s) do not exist (first: {missing[0]})")
    order = list(range(len(candidates)))
    if seed is not None and len(candidates) > n:
        order = list(np.random.default_rng(seed).permutation(len(candidates)))
    chosen, skipped = [], []
    for i in order:
        if len(chosen) == n:
            break
        (chosen if _readable(candidates[i]) else skipped).append(candidates[i])
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable calibration image(s) (first: {skipped[0]})")
    if not chosen:
        raise YoloportError(f"calibration source {label}: none of its {len(candidates)} image(s) could be read")
    if len(chosen) < n:
        notes.append(f"calibration source {label} has only {len(chosen)} usable image(s), {n} asked: using {len(chosen)}")
    for msg in notes:
        warn(msg)
    return CalibrationSet(
        source=label,
        paths=sorted(chosen),
        img_size_hw=img_size_hw,
        stride=stride,
        requested=n,
        seed=seed,
        skipped=[str(s) for s in skipped] + [str(m) for m in missing],
        warnings=notes,
    )


# ----------------------------------------------------------------------------- files for other tools


def write_list_file(paths: Sequence, out, relative: bool = False) -> Path:
    """Write an RKNN-style ``dataset.txt`` (one image per line); absolute paths unless ``relative``
    (then relative to the list file's folder, as :func:`read_list_file` reads them)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in paths:
        p = Path(p).resolve()
        lines.append(os.path.relpath(p, out.parent.resolve()) if relative else str(p))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def write_preprocessed(calib: CalibrationSet, out_dir, fmt: str = "npy", layout: str = "nchw") -> list[Path]:
    """Save every calibration input as produced by ``preprocess``, for tools that cannot call it.

    ``fmt='npy'``: float32 arrays ``[1,3,H,W]`` (``layout='nchw'``) or ``[1,H,W,3]`` (``'nhwc'``), 0..1.
    ``fmt='png'``: the letterboxed image itself (uint8 BGR, before /255), for tools that normalise
    themselves (RKNN's ``mean_values=0, std_values=255``). Returns the written paths in order.
    """
    if fmt not in ("npy", "png"):
        raise YoloportError(f"unknown calibration file format {fmt!r}: use npy or png")
    if layout not in ("nchw", "nhwc"):
        raise YoloportError(f"unknown layout {layout!r}: use nchw or nhwc")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (p, x) in enumerate(zip(calib.paths, calib)):
        name = f"{i:05d}_{Path(p).stem}"
        if fmt == "npy":
            arr = x if layout == "nchw" else x.transpose(0, 2, 3, 1)
            dst = out_dir / f"{name}.npy"
            np.save(dst, np.ascontiguousarray(arr, dtype=np.float32))
        else:
            bgr = np.clip(np.rint(x[0].transpose(1, 2, 0)[:, :, ::-1] * 255.0), 0, 255).astype(np.uint8)
            dst = out_dir / f"{name}.png"
            cv2.imwrite(str(dst), bgr)
        written.append(dst)
    return written
