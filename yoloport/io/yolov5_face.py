"""Import yolov5-face checkpoints (deepcam-cn/yolov5-face) without running their code.

Their pickles have the layout of Ultralytics YOLOv5 ones (``models.yolo.Model`` with a ``yaml`` and a
``Detect`` head) and name a few more classes (``models.common.StemBlock``, ``ShuffleV2Block``, ...):
the same restricted unpickler reads them (:mod:`yoloport.io.ultralytics`; those names become inert
records, nothing is imported or run). What makes one a face model is its head: ``Detect.no`` is
``nc + 5 + 10``, five landmarks (x, y) between objectness and the classes. The upstream YAML does not
say so; :func:`face_keypoints` reads it from the head and the config yoloport builds carries it as
``nkpt``.
"""
from __future__ import annotations

import os

from ..errors import YoloportError
from .ultralytics import UltralyticsCheckpoint, read_ultralytics_checkpoint

#: Backbone blocks only yolov5-face models have (a checkpoint naming one is a yolov5-face checkpoint).
FACE_MODULES = ("StemBlock", "ShuffleV2Block", "BlazeBlock", "DoubleBlazeBlock")


def face_keypoints(ck: UltralyticsCheckpoint) -> int:
    """Keypoints per box of an imported checkpoint's head: ``(no - 5 - nc) / 2`` (0 for a detector).

    Raises :class:`YoloportError` when the head's output count fits neither layout."""
    no = ck.detect_attrs.get("no")
    if not isinstance(no, int):
        return 0
    extra = no - 5 - ck.nc
    if extra < 0 or extra % 2:
        raise YoloportError(
            f"the checkpoint's Detect head gives {no} outputs per anchor for {ck.nc} classes: "
            "neither a detector (5 + nc) nor a keypoint head (5 + 2K + nc)"
        )
    return extra // 2


def face_yaml(ck: UltralyticsCheckpoint) -> dict:
    """The checkpoint's model YAML with its head's keypoint count as ``nkpt`` (a copy)."""
    d = dict(ck.yaml)
    k = face_keypoints(ck)
    if d.get("nkpt", k) != k:
        raise YoloportError(f"the checkpoint's yaml says nkpt={d['nkpt']} but its head predicts {k} keypoints")
    if k:
        d["nkpt"] = k
    return d


def read_face_checkpoint(path: str | os.PathLike) -> tuple[UltralyticsCheckpoint, dict]:
    """``(checkpoint, yaml with nkpt)`` of a yolov5-face (or any YOLOv5) ``.pt``, read safely."""
    ck = read_ultralytics_checkpoint(path)
    return ck, face_yaml(ck)


def is_face_checkpoint(ck: UltralyticsCheckpoint) -> bool:
    """True when the checkpoint has a keypoint head or yolov5-face's backbone blocks."""
    return face_keypoints(ck) > 0 or any(t in FACE_MODULES for t in ck.module_types)
