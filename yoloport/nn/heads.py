"""Graph-friendly variants of the Detect head, chosen by ``Detect.export_mode``.

Every variant is an ordinary eager forward that also traces cleanly to ONNX (TorchScript exporter):

``raw``
    the ``nl`` convolution outputs ``[B, na*no, H, W]`` (optionally with the sigmoid in the graph,
    ``export_options['sigmoid']``); decode and NMS run on the host.
``split``
    decoded in the graph, three outputs ``xy [B, N, 2]``, ``wh [B, N, 2]`` and
    ``conf [B, N, 1+nc]`` (objectness, class probabilities). Boxes in pixels and 0..1 scores never
    share a tensor, so an int8 NPU can give each its own scale. A keypoint head adds a fourth,
    ``kpts [B, N, 2K]`` (x1, y1, ..., xK, yK pixels): landmarks are unbounded and get their own scale.
``decoded``
    one ``[B, N, 5+nc]`` output (x, y, w, h, obj, cls...) like Ultralytics' ONNX export; a keypoint
    head's is ``[B, N, 5+2K+nc]`` in the head's channel order (x, y, w, h, obj, k1x, k1y, ..., cls...),
    as yolov5-face's own ONNX export.
``end2end``
    decode + class-aware NMS in the graph (ONNX ``NonMaxSuppression``, see
    :mod:`yoloport.nn.nms_op`); outputs ``num_dets [B, 1]`` (int32) and
    ``detections [B, max_det, 7]`` rows of (batch, class, score, x1, y1, x2, y2), zero padded:
    the layout of Cambricon's ``yolov5_detection_output``; a keypoint head's rows carry the ``2K``
    keypoint coordinates after those seven (``[B, max_det, 7+2K]``).

Keypoints (``det.nkpt = K``, channels ``5 .. 5+2K`` of each anchor) never go through the sigmoid: in the
``raw`` mode with the sigmoid in the graph only the other channels are squashed; the decoding modes
decode them as ``raw * anchor_px + cell * stride`` (no 0.5 offset), as :mod:`yoloport.ops.keypoints`.

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
    """``nl`` tensors ``[B, na*no, H, W]`` (sigmoid applied when ``sigmoid``; a keypoint head's
    keypoint channels are left as they are, see :func:`sigmoid_except_keypoints`)."""
    outs = [det.m[i](feats[i]) for i in range(det.nl)]
    if sigmoid:
        nkpt = getattr(det, "nkpt", 0)
        outs = [sigmoid_except_keypoints(o, det.na, nkpt) if nkpt else o.sigmoid() for o in outs]
    return tuple(outs)


def sigmoid_except_keypoints(x: torch.Tensor, na: int, nkpt: int) -> torch.Tensor:
    """``[B, na*no, H, W]`` -> the same with every channel but each anchor's ``2 * nkpt`` keypoint
    channels squashed. 4-D only: ``[B, na, no, H*W]``, split into (box+obj, keypoints, classes), the
    two squashed parts and the keypoints joined again. The joined tensor holds 0..1 probabilities and
    unbounded keypoints: an int8 target gives it one scale (``yoloport lint`` flags it)."""
    b, c, h, w = x.shape
    no = c // na
    y = x.reshape(b, na, no, h * w)
    head, kpt, cls = torch.split(y, [5, 2 * nkpt, no - 5 - 2 * nkpt], dim=2)
    return torch.cat((head.sigmoid(), kpt, cls.sigmoid()), 2).reshape(b, c, h, w)


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


def keypoint_constants(level_hw, anchors_px, strides, na: int, nkpt: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint decode constants ``(scale [1, N, 2K], offset [1, N, 2K])`` float32: each candidate's
    anchor ``(aw, ah)`` and cell ``(cx, cy) * stride`` repeated for its ``K`` keypoints, so that
    ``kpts = raw * scale + offset`` (:func:`yoloport.ops.keypoints.decode_keypoints`'s arithmetic)."""
    grid, anchor, stride = decode_constants(level_hw, anchors_px, strides, na)
    cell_px = (grid + np.float32(0.5)) * stride  # [1, N, 2]: integer cells times the stride
    rep = lambda a: np.ascontiguousarray(np.tile(a, (1, 1, nkpt)), dtype=np.float32)  # noqa: E731
    return rep(anchor), rep(cell_px)


def split_forward(det, feats):
    """``(xy [B,N,2], wh [B,N,2], conf [B,N,1+nc])`` decoded in the graph (pixels, probabilities), and
    ``kpts [B, N, 2K]`` (pixels) fourth when the head has keypoints.

    ``xy = (2 s_xy + grid - 0.5) * stride``, ``wh = (2 s_wh)^2 * anchor``: the same float32 arithmetic
    as the host decode up to the order of one addition; keypoints ``raw * anchor + cell * stride``
    exactly as the host's.
    """
    hw = _level_hw(det, feats)
    anchors_px, strides = det.anchors_px().cpu().numpy(), det.stride.tolist()
    grid, anchor, stride = (torch.from_numpy(c) for c in decode_constants(hw, anchors_px, strides, det.na))
    logits = flatten_levels(det, feats)
    y = logits.sigmoid()
    dev = y.device
    nkpt = getattr(det, "nkpt", 0)
    if nkpt:  # channels: box 4, obj 1, keypoints 2K (not squashed), classes nc
        sxy, swh, obj, _, cls = torch.split(y, [2, 2, 1, 2 * nkpt, det.nc], dim=2)
        conf = torch.cat((obj, cls), 2)
        kraw = logits[..., 5 : 5 + 2 * nkpt]
        kscale, koffset = (torch.from_numpy(c).to(dev) for c in keypoint_constants(hw, anchors_px, strides, det.na, nkpt))
    else:
        sxy, swh, conf = torch.split(y, [2, 2, det.no - 4], dim=2)
    xy = (sxy * 2 + grid.to(dev)) * stride.to(dev)
    t = swh * 2
    wh = t * t * anchor.to(dev)
    if nkpt:
        return xy, wh, conf, kraw * kscale + koffset
    return xy, wh, conf


def decoded_forward(det, feats):
    """One ``[B, N, 5+nc]`` tensor (x, y, w, h pixels, obj, class probabilities); with keypoints
    ``[B, N, 5+2K+nc]`` in the head's channel order (keypoints after the objectness)."""
    parts = split_forward(det, feats)
    if len(parts) == 4:
        xy, wh, conf, kpts = parts
        return torch.cat((xy, wh, conf[..., :1], kpts, conf[..., 1:]), 2)
    return torch.cat(parts, 2)


def end2end_forward(det, feats, conf_thres: float, iou_thres: float, max_det: int):
    """Decode + class-aware NMS -> ``(num_dets [B, 1] int32, detections [B, max_det, 7 (+2K)])``."""
    from .nms_op import detection_output

    parts = split_forward(det, feats)
    kpts = parts[3] if len(parts) == 4 else None
    return detection_output(*parts[:3], conf_thres, iou_thres, max_det, kpts=kpts)


# ----------------------------------------------------------------------------- torch host decode


def decode_raw_torch(outputs: list[torch.Tensor], anchors_px, strides, sigmoid_applied: bool = False,
                     nkpt: int = 0) -> torch.Tensor:
    """Torch twin of :func:`yoloport.ops.decode.decode_raw`: ``nl`` tensors ``[B, na*no, H, W]`` ->
    ``[B, N, no]`` (used by the benchmark and as a cross-check). With ``nkpt`` keypoints the rows are
    ``x y w h obj cls... k1x k1y ...`` (keypoints last, never squashed), as the numpy decode."""
    anchors_px = torch.as_tensor(np.asarray(anchors_px, dtype=np.float32))
    outs = sorted(outputs, key=lambda o: -o.shape[-1] * o.shape[-2])
    res = []
    for o, a, s in zip(outs, anchors_px, strides):
        b, c, h, w = o.shape
        na = len(a)
        x = o.view(b, na, c // na, h, w).permute(0, 1, 3, 4, 2)
        y = x if sigmoid_applied else x.sigmoid()
        ys, xs = torch.meshgrid(torch.arange(h, dtype=y.dtype), torch.arange(w, dtype=y.dtype), indexing="ij")
        grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2)
        anchor = a.view(1, na, 1, 1, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * float(s)
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        c0 = 5 + 2 * nkpt
        parts = [xy, wh, y[..., 4:5], y[..., c0:]]
        if nkpt:
            k = x[..., 5:c0].reshape(b, na, h, w, nkpt, 2) * anchor.unsqueeze(-2) + (grid * float(s)).unsqueeze(-2)
            parts.append(k.reshape(b, na, h, w, 2 * nkpt))
        res.append(torch.cat(parts, -1).reshape(b, -1, c // na))
    return torch.cat(res, 1)
