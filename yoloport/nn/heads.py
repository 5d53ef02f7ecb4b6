"""Graph-friendly variants of the Detect head, chosen by ``Detect.export_mode``.

Every variant is an ordinary eager forward that also traces cleanly to ONNX (TorchScript exporter):

``raw``
    the ``nl`` convolution outputs ``[B, na*no, H, W]`` (optionally with the sigmoid in the graph,
    ``export_options['sigmoid']``); decode and NMS run on the host.
``split``
    decoded in the graph, three outputs ``xy [B, N, 2]``, ``wh [B, N, 2]`` and
    ``conf [B, N, 1+nc]`` (objectness, class probabilities). Boxes in pixels and 0..1 scores never
    share a tensor, so an int8 NPU can give each its own scale.
``decoded``
    one ``[B, N, 5+nc]`` output (x, y, w, h, obj, cls...) like Ultralytics' ONNX export.
``end2end``
    decode + class-aware NMS in the graph (ONNX ``NonMaxSuppression``, see
    :mod:`yoloport.nn.nms_op`); outputs ``num_dets [B, 1]`` (int32) and
    ``detections [B, max_det, 7]`` rows of (batch, class, score, x1, y1, x2, y2), zero padded:
    the layout of Cambricon's ``yolov5_detection_output``.

Graph rules every decoding variant follows (NPU toolchains are picky): no in-place slice assignment
(no ``ScatterND``), no 5-D tensors (each level becomes ``[B, na*H*W, no]`` through a 4-D
``[B, na, no, H*W]`` view), grid and anchor terms are precomputed constants ``[1, N, 2]``, one
Sigmoid with one consumer, and ``(2 s)^2`` written as a product, not ``Pow``.

``N = na * sum(H_i * W_i)``, ordered level, anchor, row, column exactly like
:func:`yoloport.ops.decode.decode_raw`, so host and graph decodes line up row for row.
"""
from __future__ import annotations

import numpy as np
import torch

from ..ops.decode import make_grid

EXPORT_MODES = ("raw", "split", "decoded", "end2end")

# end2end defaults (Ultralytics' detect defaults); recorded in the ONNX metadata.
DEFAULT_CONF_THRES = 0.25
DEFAULT_IOU_THRES = 0.45
DEFAULT_MAX_DET = 300


def export_forward(det, feats: list[torch.Tensor]):
    """Dispatch on ``det.export_mode``; options come from ``det.export_options``."""
    mode = det.export_mode
    opts = det.export_options or {}
    if getattr(det, "nkpt", 0) and (mode != "raw" or opts.get("sigmoid")):
        from ..errors import YoloportError

        raise YoloportError(
            f"a landmark head ({det.nkpt} keypoints) exports in the plain raw mode only so far; "
            f"the {mode!r} mode{' with the sigmoid in the graph' if mode == 'raw' else ''} does not carry landmarks yet"
        )
    if mode == "raw":
        return raw_forward(det, feats, sigmoid=bool(opts.get("sigmoid", False)))
    if mode == "split":
        return split_forward(det, feats)
    if mode == "decoded":
        return decoded_forward(det, feats)
    if mode == "end2end":
        return end2end_forward(
            det,
            feats,
            conf_thres=float(opts.get("conf_thres", DEFAULT_CONF_THRES)),
            iou_thres=float(opts.get("iou_thres", DEFAULT_IOU_THRES)),
            max_det=int(opts.get("max_det", DEFAULT_MAX_DET)),
        )
    raise ValueError(f"unknown export mode {mode!r}; choose from {', '.join(EXPORT_MODES)}")


def raw_forward(det, feats, sigmoid: bool = False):
    """``nl`` tensors ``[B, na*no, H, W]`` (sigmoid applied when ``sigmoid``)."""
    outs = [det.m[i](feats[i]) for i in range(det.nl)]
    if sigmoid:
        outs = [o.sigmoid() for o in outs]
    return tuple(outs)


# ----------------------------------------------------------------------------- decode constants


def decode_constants(level_hw, anchors_px, strides, na: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-candidate constants for all levels: ``grid [1, N, 2]`` (cell offset - 0.5, cells),
    ``anchor [1, N, 2]`` (pixels) and ``stride [1, N, 1]``, float32, N ordered level, anchor, y, x.

    ``level_hw``: ``[(H_i, W_i)]``; ``anchors_px``: ``[nl, na, 2]``; ``strides``: ``[nl]``.
    """
    grids, anchors, strides_ = [], [], []
    anchors_px = np.asarray(anchors_px, dtype=np.float32)
    for (h, w), a, s in zip(level_hw, anchors_px, strides):
        g = make_grid(h, w).reshape(1, h * w, 2) - np.float32(0.5)  # [1, HW, 2]
        grids.append(np.broadcast_to(g, (na, h * w, 2)).reshape(na * h * w, 2))
        anchors.append(np.repeat(a.reshape(na, 1, 2), h * w, axis=1).reshape(na * h * w, 2))
        strides_.append(np.full((na * h * w, 1), s, dtype=np.float32))
    cat = lambda xs: np.ascontiguousarray(np.concatenate(xs, 0)[None], dtype=np.float32)  # noqa: E731
    return cat(grids), cat(anchors), cat(strides_)


def _level_hw(det, feats) -> list[tuple[int, int]]:
    """Grid size of each level: from ``export_options['level_hw']`` when exporting (plain ints,
    nothing traced), else from the feature maps."""
    hw = (det.export_options or {}).get("level_hw")
    if hw:
        return [tuple(int(v) for v in x) for x in hw]
    return [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]


def flatten_levels(det, feats) -> torch.Tensor:
    """Head convs of all levels -> raw logits ``[B, N, no]`` via 4-D views only.

    Level i: ``[B, na*no, H, W] -> [B, na, no, H*W] -> [B, na, H*W, no] -> [B, na*H*W, no]``.
    """
    outs = []
    for i, (h, w) in enumerate(_level_hw(det, feats)):
        x = det.m[i](feats[i])
        x = x.reshape(-1, det.na, det.no, h * w).permute(0, 1, 3, 2)
        outs.append(x.reshape(-1, det.na * h * w, det.no))
    return torch.cat(outs, 1) if len(outs) > 1 else outs[0]


def split_forward(det, feats):
    """``(xy [B,N,2], wh [B,N,2], conf [B,N,1+nc])`` decoded in the graph (pixels, probabilities).

    ``xy = (2 s_xy + grid - 0.5) * stride``, ``wh = (2 s_wh)^2 * anchor``: the same float32 arithmetic
    as the host decode up to the order of one addition.
    """
    hw = _level_hw(det, feats)
    grid, anchor, stride = (torch.from_numpy(c) for c in decode_constants(hw, det.anchors_px().cpu().numpy(), det.stride.tolist(), det.na))
    y = flatten_levels(det, feats).sigmoid()
    sxy, swh, conf = torch.split(y, [2, 2, det.no - 4], dim=2)
    dev = y.device
    xy = (sxy * 2 + grid.to(dev)) * stride.to(dev)
    t = swh * 2
    wh = t * t * anchor.to(dev)
    return xy, wh, conf


def decoded_forward(det, feats):
    """One ``[B, N, 5+nc]`` tensor (x, y, w, h pixels, obj, class probabilities)."""
    xy, wh, conf = split_forward(det, feats)
    return torch.cat((xy, wh, conf), 2)


def end2end_forward(det, feats, conf_thres: float, iou_thres: float, max_det: int):
    """Decode + class-aware NMS -> ``(num_dets [B, 1] int32, detections [B, max_det, 7])``."""
    from .nms_op import detection_output

    xy, wh, conf = split_forward(det, feats)
    return detection_output(xy, wh, conf, conf_thres, iou_thres, max_det)


# ----------------------------------------------------------------------------- torch host decode


def decode_raw_torch(outputs: list[torch.Tensor], anchors_px, strides, sigmoid_applied: bool = False) -> torch.Tensor:
    """Torch twin of :func:`yoloport.ops.decode.decode_raw`: ``nl`` tensors ``[B, na*no, H, W]`` ->
    ``[B, N, no]`` (used by the benchmark and as a cross-check)."""
    anchors_px = torch.as_tensor(np.asarray(anchors_px, dtype=np.float32))
    outs = sorted(outputs, key=lambda o: -o.shape[-1] * o.shape[-2])
    res = []
    for o, a, s in zip(outs, anchors_px, strides):
        b, c, h, w = o.shape
        na = len(a)
        y = o.view(b, na, c // na, h, w).permute(0, 1, 3, 4, 2)
        y = y if sigmoid_applied else y.sigmoid()
        ys, xs = torch.meshgrid(torch.arange(h, dtype=y.dtype), torch.arange(w, dtype=y.dtype), indexing="ij")
        grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * float(s)
        wh = (y[..., 2:4] * 2) ** 2 * a.view(1, na, 1, 1, 2)
        res.append(torch.cat((xy, wh, y[..., 4:]), -1).reshape(b, -1, c // na))
    return torch.cat(res, 1)
