"""Cross-layer equalization (Nagel et al. 2019) for YOLOv5's Conv-BN-SiLU chains.

Equalization rescales output channel ``c`` of a convolution by ``1/s_c`` and the matching input channel
of the next one by ``s_c``, so both weight tensors span similar ranges per channel (what a per-tensor
weight grid, such as mlu-sim's, needs). It is exact only through a positively homogeneous activation
(``f(z / s) = f(z) / s``): ReLU, or none. **SiLU is not**: ``SiLU(z / s) * s = z * sigmoid(z / s)``,
which equals ``SiLU(z)`` only for ``s = 1``; every YOLOv5 convolution except the Detect ones ends in
SiLU. What is exact in a YOLOv5 graph: max-pooling, nearest upsampling and concatenation commute with a
positive per-channel scale, but the SiLU before them does not; so there is no exact pair, and this
module equalizes the pairs where the approximation is smallest and local:

- ``Bottleneck.cv1 -> SiLU -> Bottleneck.cv2`` (``cv1``'s output feeds ``cv2`` alone), with the scale
  bounded to ``[1/max_scale, max_scale]`` (``z * sigmoid(z / s)`` stays close to ``SiLU(z)`` for ``s``
  near 1 and for large ``|z|``);
- the float change this causes is *measured* (:func:`float_change_db`: the SQNR of the equalized float
  model's outputs against the original's on calibration images) and recorded with the result; by
  default a pair is kept only when it raises the quantized model's output SQNR on calibration images.
  Measured on the embedded default model (128x160, synthetic shapes): equalizing every pair with
  ``max_scale=2`` changes the *float* outputs to 21.9 dB SQNR, far below the ~44 dB that per-channel int8
  weights cost, so unselected equalization through SiLU does more harm than good.

Pure: folded float model and calibration images in, equalized float model out.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .error import sqnr_db
from .layers import raw_outputs


def bottleneck_pairs(model) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(name, cv1, cv2)`` Conv blocks of every Bottleneck (cv1's output feeds only cv2)."""
    from ..nn.modules import Bottleneck

    return [(name, mod.cv1, mod.cv2) for name, mod in model.named_modules()
            if isinstance(mod, Bottleneck) and mod.cv2.conv.groups == 1]


def channel_scales(w1: torch.Tensor, w2: torch.Tensor, max_scale: float) -> torch.Tensor:
    """Per-channel ``s [C]`` equalizing ``w1 [C, ...]``'s output ranges with ``w2 [*, C, ...]``'s input
    ranges: ``s = sqrt(r1 / r2)`` (``w1 / s`` and ``w2 * s`` then both span ``sqrt(r1 r2)``), clamped to
    ``[1/max_scale, max_scale]``; 1 where a range is zero."""
    r1 = w1.detach().abs().flatten(1).amax(1).double()
    r2 = w2.detach().abs().transpose(0, 1).flatten(1).amax(1).double()
    s = torch.sqrt(r1 / r2.clamp_min(1e-12))
    s = torch.where((r1 > 0) & (r2 > 0), s, torch.ones_like(s))
    return s.clamp(1.0 / max_scale, max_scale)


def _scale_pair(cv1, cv2, s: torch.Tensor) -> None:
    """cv1's output channels (weight rows and folded bias) divided by ``s [C]``, cv2's input columns
    multiplied by it, in place."""
    bias1 = cv1.bn.bias if isinstance(getattr(cv1, "bn", None), nn.BatchNorm2d) else cv1.conv.bias
    cv1.conv.weight.data = (cv1.conv.weight.data.double() / s.view(-1, 1, 1, 1)).float()
    if bias1 is not None:
        bias1.data = (bias1.data.double() / s).float()
    cv2.conv.weight.data = (cv2.conv.weight.data.double() * s.view(1, -1, 1, 1)).float()


def equalize(model, images=None, grid=None, max_scale: float = 2.0, select: bool = True) -> tuple[object, dict]:
    """A copy of the folded ``model`` with its Bottleneck pairs equalized (:func:`channel_scales`): cv1's
    output divided by ``s``, cv2's input multiplied by it (exact but for the SiLU between them).

    ``select`` (needs ``images`` and ``grid``): a pair is kept only when it raises the SQNR of the
    weights-on-``grid`` model's head outputs against the original float model's on ``images``
    (calibration images), measured pair by pair in forward order; without it every pair is scaled.
    Returns ``(model, record)`` with the pairs tried and kept and the SQNRs."""
    from .layers import weights_on_grid

    out = copy.deepcopy(model)
    pairs = bottleneck_pairs(out)
    record = {"pairs": len(pairs), "max_scale": max_scale, "selected": bool(select and images is not None and grid is not None)}
    if not record["selected"]:
        for _name, cv1, cv2 in pairs:
            _scale_pair(cv1, cv2, channel_scales(cv1.conv.weight, cv2.conv.weight, max_scale))
        record["kept"] = [name for name, _, _ in pairs]
        return out, record
    target = raw_outputs(model, images)

    def score(m) -> float:
        return sqnr_db(target, raw_outputs(weights_on_grid(m, grid), images))

    best = score(out)
    record["sqnr_before_db"] = best
    kept = []
    for name, cv1, cv2 in pairs:
        s = channel_scales(cv1.conv.weight, cv2.conv.weight, max_scale)
        _scale_pair(cv1, cv2, s)
        trial = score(out)
        if trial > best:
            best = trial
            kept.append(name)
        else:
            _scale_pair(cv1, cv2, 1.0 / s)
    record.update(kept=kept, sqnr_after_db=best)
    return out, record


def float_change_db(original, equalized, images) -> float:
    """SQNR (dB) of ``equalized``'s float head outputs against ``original``'s on ``images``: the part of
    equalization that is not exact (SiLU); ``inf`` when exact."""
    return sqnr_db(raw_outputs(original, images), raw_outputs(equalized, images))
