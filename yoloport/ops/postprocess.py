"""Head outputs of any export mode -> detections in original-image pixels (numpy, host side).

``HeadSpec`` is everything needed to decode a head without yoloport's model: it is written into
every exported graph's metadata and every artifact's sidecar.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .boxes import scale_boxes
from .keypoints import keypoints_last, scale_keypoints
from .decode import decode_raw, decode_raw_above, decode_split
from .nms import nms_candidates, non_max_suppression

HEAD_MODES = ("raw", "split", "decoded", "end2end")


@dataclass
class HeadSpec:
    """How to read a head's outputs.

    ``mode``: ``raw`` (``nl`` conv outputs ``[B, na*no, H, W]``, sigmoid in the graph when
    ``sigmoid_applied``), ``split`` (``xy [B,N,2]``, ``wh [B,N,2]``, ``conf [B,N,1+nc]``), ``decoded``
    (``[B, N, 5+nc]``) or ``end2end`` (``count [B]`` or ``[B,1]`` and ``[B, max_det, 7]`` rows of
    batch, class, score, x1, y1, x2, y2 as Cambricon's ``yolov5_detection_output``).
    With ``nkpt = K`` keypoints: ``split`` has a fourth output ``kpts [B,N,2K]``, ``decoded`` is
    ``[B, N, 5+2K+nc]`` in the head's channel order, ``end2end`` rows carry the ``2K`` keypoint values
    after the seven (see :mod:`yoloport.nn.heads`).
    ``convention``: the output convention this layout follows (a name of
    ``yoloport.deploy.conventions.CONVENTIONS``; None: not recorded). Decoding reads only ``mode`` and
    ``sigmoid_applied``.
    """

    mode: str
    nc: int
    anchors_px: list = field(default_factory=list)  # [nl][na][2]
    strides: list = field(default_factory=list)  # [nl]
    sigmoid_applied: bool = False
    names: list = field(default_factory=list)
    convention: str | None = None
    nkpt: int = 0  # keypoints per box (5 landmarks for yolov5-face); decoded rows carry them last

    @property
    def n_extra(self) -> int:
        """Columns a detection row carries after ``x1 y1 x2 y2 conf cls``: ``2 * nkpt`` keypoint coordinates."""
        return 2 * self.nkpt

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in keys})

    @classmethod
    def from_model(cls, model, mode: str = "raw", sigmoid_applied: bool = False, convention: str | None = None) -> "HeadSpec":
        det = model.detect
        return cls(
            mode=mode,
            nc=det.nc,
            anchors_px=det.anchors_px().tolist(),
            strides=det.stride.tolist(),
            sigmoid_applied=sigmoid_applied,
            names=list(model.names),
            convention=convention,
            nkpt=int(getattr(det, "nkpt", 0)),
        )


def decode_outputs(outputs: list[np.ndarray], head: HeadSpec) -> np.ndarray:
    """Outputs of a ``raw``, ``split`` or ``decoded`` head -> ``[B, N, 5+nc]`` decoded predictions
    (``[B, N, 5+nc+2K]`` with the keypoints last for a ``K``-keypoint head, whatever the mode)."""
    if head.mode == "raw":
        return decode_raw(outputs, np.asarray(head.anchors_px), head.strides, head.sigmoid_applied, head.nkpt)
    if head.mode == "split":
        parts = split_outputs_in_order(outputs, head.nc, head.nkpt)
        return decode_split(*parts[:3]) if not head.nkpt else np.concatenate([decode_split(*parts[:3]), parts[3]], -1)
    if head.mode == "decoded":
        pred = np.asarray(outputs[0], dtype=np.float32)
        return keypoints_last(pred, head.nkpt) if head.nkpt else pred
    raise ValueError(f"head mode {head.mode!r} has no decoded form (end2end outputs are final detections)")


def split_outputs_in_order(outputs, nc: int, nkpt: int = 0) -> list[np.ndarray]:
    """The split head's outputs as ``[xy, wh, conf (, kpts)]``: in the given order when their last-dim
    widths are ``2, 2, 1+nc (, 2K)``; else told apart by width (a runtime may reorder them), which needs
    ``1 + nc`` and ``2K`` to differ from 2 and from each other."""
    widths = [np.shape(o)[-1] for o in outputs]
    expected = [2, 2, 1 + nc] + ([2 * nkpt] if nkpt else [])
    if widths == expected:
        return list(outputs)
    if sorted(widths) != sorted(expected) or len(set(expected[2:]) | {2}) != len(expected) - 1:
        raise ValueError(f"split head outputs have unexpected shapes {[np.shape(o) for o in outputs]} "
                         f"(expected last dims {expected})")
    two = [o for o in outputs if np.shape(o)[-1] == 2]
    rest = [next(o for o in outputs if np.shape(o)[-1] == w) for w in expected[2:]]
    return [two[0], two[1], *rest]


def end2end_to_detections(outputs: list[np.ndarray], batch_size: int, nkpt: int = 0) -> list[np.ndarray]:
    """``yolov5_detection_output`` layout -> one ``[n, 6]`` (x1, y1, x2, y2, conf, cls) per image
    (``[n, 6 + 2K]`` with the keypoints last when the rows carry ``nkpt = K`` keypoints).

    The two outputs are told apart by shape (rows ``[B, max_det, 7 + 2K]``, count ``[B]`` or ``[B, 1]``),
    so a runtime may return them in either order."""
    width = 7 + 2 * int(nkpt)
    arrays = [np.asarray(o) for o in outputs]
    rows_i = next((i for i, a in enumerate(arrays) if a.ndim == 3 and a.shape[-1] == width), None)
    if rows_i is None or len(arrays) != 2:
        raise ValueError(f"end2end outputs must be a count and [B, max_det, {width}] rows, got {[a.shape for a in arrays]}")
    rows = arrays[rows_i].astype(np.float32).reshape(batch_size, -1, width)
    count = arrays[1 - rows_i].reshape(batch_size, -1)[:, 0].astype(int)
    dets = []
    for b in range(batch_size):
        r = rows[b, : count[b]]
        dets.append(np.concatenate([r[:, 3:7], r[:, 2:3], r[:, 1:2], r[:, 7:]], 1).astype(np.float32))
    return dets


def postprocess(
    outputs: list[np.ndarray],
    head: HeadSpec,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes=None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
) -> list[np.ndarray]:
    """Head outputs -> per-image ``[n, 6]`` detections in input pixels (decode + class-aware NMS).

    A ``raw`` head is filtered on objectness before it is decoded (:func:`~yoloport.ops.decode.decode_raw_above`):
    the same detections as decoding every candidate, without the ``[B, N, 5+nc]`` array.

    A keypoint head (``head.nkpt > 0``) gives ``[n, 6 + 2 * nkpt]`` rows: the keypoints' x, y follow
    the six usual columns."""
    nc = head.nc if head.nkpt else None
    if head.mode == "raw":
        cands = decode_raw_above(
            outputs, np.asarray(head.anchors_px), head.strides, conf_thres, head.sigmoid_applied, head.nkpt
        )
        return nms_candidates(cands, conf_thres, iou_thres, classes, agnostic, multi_label, max_det, nc=nc)
    if head.mode == "end2end":
        batch = max(np.asarray(o).shape[0] for o in outputs)
        dets = end2end_to_detections(outputs, batch, head.nkpt)
        return [d[d[:, 4] > conf_thres] if classes is None else d[(d[:, 4] > conf_thres) & np.isin(d[:, 5], classes)] for d in dets]
    pred = decode_outputs(outputs, head)
    return non_max_suppression(pred, conf_thres, iou_thres, classes, agnostic, multi_label, max_det, nc=nc)


def to_original(det: np.ndarray, input_hw, orig_hw, ratio_pad=None) -> np.ndarray:
    """Scale ``[n, 6]`` detections (or ``[n, 6 + 2K]`` with keypoints) from input pixels back to the
    original image (copy); keypoints are mapped like the boxes and clipped to the image."""
    det = det.copy()
    if len(det):
        scale_boxes(tuple(input_hw), det[:, :4], tuple(orig_hw), ratio_pad)
        if det.shape[1] > 6:
            kpts = det[:, 6:].reshape(len(det), -1, 2)
            scale_keypoints(tuple(input_hw), kpts, tuple(orig_hw), ratio_pad)
            det[:, 6:] = kpts.reshape(len(det), -1)
    return det
