"""The training dataset: YOLO images and labels with YOLOv5's augmentation pipeline, reproducibly.

Images and labels are scanned by :class:`yoloport.data.dataset.ValDataset` (the one label parser:
bad lines are reported as ``file:line`` and dropped, images without labels are background). A sample
is a pure function of ``(seed, epoch, index)`` (:func:`yoloport.data.augment.sample_rng`); call
:meth:`TrainDataset.set_epoch` before each epoch. :class:`EpochSampler` shuffles with
``seed + epoch`` and splits the order between DDP ranks, so data order needs no saved RNG state.

Pipeline per sample, as YOLOv5 v7.0 ``LoadImagesAndLabels.__getitem__``:

1. mosaic of 4 images (probability ``hyp['mosaic']``, never with ``rect``), optional MixUp with
   a second mosaic (``hyp['mixup']``); otherwise the image resized to fit the training size,
   letterboxed (to its rectangular batch shape with ``rect``) and, when augmenting,
   :func:`random_perspective`;
2. labels to normalised ``xywh`` (clipped), HSV gains, vertical and horizontal flips.

A face dataset (``nkpt > 0``, the model's landmark count) reads yolov5-face's labels
(:mod:`yoloport.data.face_labels`) and every step moves the landmarks with the image
(:mod:`yoloport.data.augment`); samples then carry ``2 * nkpt`` more columns.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import YoloportError
from ..ops.boxes import xywhn2xyxy
from .augment import (
    augment_hsv,
    flip,
    mixup,
    mosaic4,
    points_to_normalised,
    points_to_pixels,
    random_perspective,
    sample_rng,
)
from .dataset import DatasetReport, ValDataset, read_image, rect_batch_shapes
from .letterbox import letterbox


def load_resized(path, img_hw: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Read a BGR image and resize it to fit ``img_hw`` keeping its aspect: ``(im, (h0, w0), (h, w))``.

    For a square size this is YOLOv5's ``load_image`` (long side = size, ``int()`` truncation,
    INTER_AREA when shrinking, INTER_LINEAR when enlarging).
    """
    im = read_image(path)
    h0, w0 = im.shape[:2]
    r = min(img_hw[0] / h0, img_hw[1] / w0)
    if r != 1:
        interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
        im = cv2.resize(im, (max(int(w0 * r), 1), max(int(h0 * r), 1)), interpolation=interp)
    return im, (h0, w0), im.shape[:2]


def xyxy_to_xywhn_clipped(boxes: np.ndarray, hw: tuple[int, int], eps: float = 1e-3) -> np.ndarray:
    """Pixel ``xyxy [n, 4]`` -> normalised ``xywh``, clipped to ``(w - eps, h - eps)`` first (YOLOv5)."""
    b = boxes.copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, hw[1] - eps)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, hw[0] - eps)
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] + b[:, 2]) / 2 / hw[1]
    out[:, 1] = (b[:, 1] + b[:, 3]) / 2 / hw[0]
    out[:, 2] = (b[:, 2] - b[:, 0]) / hw[1]
    out[:, 3] = (b[:, 3] - b[:, 1]) / hw[0]
    return out


class TrainDataset(torch.utils.data.Dataset):
    """Augmented training samples of one split.

    Args:
        images: split spec (folder, ``.txt`` list, or a list of those), as in the data YAML.
        nc: number of classes (labels outside ``0..nc-1`` are reported and dropped).
        img_hw: training size ``(h, w)`` (multiples of ``stride``).
        hyp: augmentation hyperparameters (``hsv_*``, ``degrees``, ``translate``, ``scale``, ``shear``,
            ``perspective``, ``flipud``, ``fliplr``, ``mosaic``, ``mixup``).
        augment: apply augmentation (off: plain letterbox, e.g. for ``--rect`` evaluation).
        rect: rectangular batches (images sorted by aspect ratio, each batch of ``batch_size`` one
            shape, no mosaic); ``batch_size`` is then the per-process batch.
        seed: the run's seed.
        cache: keep resized images in memory (per process).
        nkpt: landmarks per face of a face model's head (0: a detector): labels are then read as
            ``cls xc yc w h x1 y1 ... xK yK`` and the landmarks follow the augmentation.

    ``__getitem__`` -> ``(image uint8 [3, H, W] RGB, labels float32 [n, 6] (0, cls, xc, yc, w, h), path)``;
    with ``nkpt`` the labels are ``[n, 6 + 2 * nkpt]``, normalised landmarks last (``-1`` when missing).
    """

    def __init__(self, images, nc: int, img_hw: tuple[int, int], hyp: dict, augment: bool = True,
                 rect: bool = False, batch_size: int = 16, stride: int = 32, seed: int = 0, cache: bool = False,
                 nkpt: int = 0):
        self.img_hw = (int(img_hw[0]), int(img_hw[1]))
        if self.img_hw[0] % stride or self.img_hw[1] % stride:
            raise YoloportError(f"training size {self.img_hw[1]}x{self.img_hw[0]} is not a multiple of the stride {stride}")
        scan = ValDataset(images, nc, img_size=max(self.img_hw), batch_size=1, stride=stride, rect=False, nkpt=nkpt)
        self.nkpt = int(nkpt)
        self.report: DatasetReport = scan.report
        self.files: list[Path] = list(scan.files)
        self.labels: list[np.ndarray] = [lb.astype(np.float32) for lb in scan.labels]
        self.shapes_wh = scan.shapes_wh.copy()
        self.nc, self.hyp, self.augment, self.rect = nc, dict(hyp), augment, rect
        self.stride, self.seed, self.epoch = stride, int(seed), 0
        self.mosaic = augment and not rect
        self.batch_size = batch_size
        self._cache: dict[int, tuple] | None = {} if cache else None
        if rect:
            order, self.batch_index, self.batch_shapes = rect_batch_shapes(
                self.shapes_wh, batch_size, max(self.img_hw), stride, pad=0.0)
            self.files = [self.files[i] for i in order]
            self.labels = [self.labels[i] for i in order]
            self.shapes_wh = self.shapes_wh[order]

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (call before building the epoch's iterator)."""
        self.epoch = int(epoch)

    def load(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image ``i`` resized to fit the training size (cached when asked)."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        out = load_resized(self.files[i], self.img_hw)
        if self._cache is not None:
            self._cache[i] = out
        return out

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        picks = [index] + [int(x) for x in rng.integers(0, len(self), 3)]
        rng.shuffle(picks)
        tiles = [(self.load(k)[0], self.labels[k]) for k in picks]
        return mosaic4(tiles, self.img_hw, rng, self.hyp)

    def __getitem__(self, index: int):
        rng = sample_rng(self.seed, self.epoch, index)
        hyp = self.hyp
        if self.mosaic and rng.random() < hyp.get("mosaic", 1.0):
            img, labels = self._mosaic(index, rng)
            if rng.random() < hyp.get("mixup", 0.0):
                img, labels = mixup(img, labels, *self._mosaic(int(rng.integers(0, len(self))), rng), rng)
        else:
            img, _, (h, w) = self.load(index)
            shape = tuple(int(v) for v in self.batch_shapes[self.batch_index[index]]) if self.rect else self.img_hw
            img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment, stride=self.stride)
            labels = self.labels[index].copy()
            if len(labels):
                labels[:, 1:5] = xywhn2xyxy(labels[:, 1:5], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
                points_to_pixels(labels, ratio[0] * w, ratio[1] * h, pad[0], pad[1])
            if self.augment:
                img, labels = random_perspective(img, labels, rng, hyp.get("degrees", 0.0), hyp.get("translate", 0.1),
                                                 hyp.get("scale", 0.5), hyp.get("shear", 0.0),
                                                 hyp.get("perspective", 0.0))
        labels = labels.astype(np.float32)
        if len(labels):
            labels[:, 1:5] = xyxy_to_xywhn_clipped(labels[:, 1:5], img.shape[:2])
            points_to_normalised(labels, img.shape[:2])
        if self.augment:
            img = np.ascontiguousarray(img)
            augment_hsv(img, rng, hyp.get("hsv_h", 0.015), hyp.get("hsv_s", 0.7), hyp.get("hsv_v", 0.4))
            img, labels = flip(img, labels, rng, hyp.get("fliplr", 0.5), hyp.get("flipud", 0.0))
        out = torch.zeros((len(labels), 6 + 2 * self.nkpt))
        if len(labels):
            out[:, 1:] = torch.from_numpy(labels)
        chw = np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])  # HWC BGR -> CHW RGB
        return torch.from_numpy(chw), out, str(self.files[index])

    @staticmethod
    def collate(batch):
        """-> ``(images uint8 [B, 3, H, W], targets float32 [n, 6] (img_idx, cls, xc, yc, w, h), paths)``
        (``[n, 6 + 2K]`` with the normalised landmarks of a face dataset)."""
        ims, labels, paths = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(ims, 0), torch.cat(labels, 0), list(paths)


class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch for one process: shuffled with ``seed + epoch`` (or in order), split by rank.

    Non-rect: the permutation is padded (repeating its head) to a multiple of ``world`` and rank
    ``r`` takes ``order[r::world]``. Rect: whole batches of ``batch_size`` go to ranks in turn so
    every batch keeps one shape. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 rect_batch_size: int | None = None):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, int(seed), rank, world
        self.rect_batch_size = rect_batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _indices(self) -> list[int]:
        if self.rect_batch_size:
            bs = self.rect_batch_size
            batches = [list(range(s, min(s + bs, self.n))) for s in range(0, self.n, bs)]
            total = math.ceil(len(batches) / self.world) * self.world
            batches += batches[: total - len(batches)]
            return [i for b in batches[self.rank :: self.world] for i in b]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = math.ceil(self.n / self.world) * self.world
        order += (order * math.ceil(total / max(self.n, 1)))[: total - self.n]
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())
