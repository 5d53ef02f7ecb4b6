"""What every post-training quantization step works on: the float model with its BatchNorms folded
(as exported), its convolutions as ``(weight, bias)`` pairs in forward order, a backend's int8 weight
grid, and the calibration images as torch batches.

The folded model keeps the YAML's state-dict keys (:func:`yoloport.deploy.surgery.fuse_conv_bn` with
``keep_bn=True``: each BN becomes ``x + shift``), so a PTQ'd model still saves, reloads and exports like
the original; a ``Conv`` block's bias is then its BN's ``bias``, a Detect convolution's its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import YoloportError
from .fake_quant import fake_quant, forward_order


@dataclass(frozen=True)
class WeightGrid:
    """A symmetric int weight grid: ``w ~ s * q``, ``q`` in ``[-qmax, qmax]``, ``s = max|w| / qmax`` over
    each output channel (``per_channel``) or the whole tensor, as ONNX Runtime (``WeightSymmetric``),
    NNCF, RKNN (``quantized_method='channel'``) and mlu-sim compute it; with ``weight_range='mse'`` the range
    minimising the weight's squared error instead of ``max|w|`` (mlu-sim's key of that name,
    :func:`yoloport.quant.range_estimators.weight_range_mse`)."""

    qmax: int = 127
    per_channel: bool = True
    weight_range: str = "max"

    def __post_init__(self):
        if self.weight_range not in ("max", "mse"):
            raise YoloportError(f"weight_range {self.weight_range!r}: choose one of max, mse")

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """``s`` of weight ``w [Cout, Cin/g, k, k]``: ``[Cout, 1, 1, 1]`` per channel, else a scalar."""
        w = w.detach().float()
        if self.weight_range == "mse":
            from .range_estimators import weight_range_mse

            r = weight_range_mse(w, self.qmax, self.per_channel) / self.qmax
            return r.view(-1, 1, 1, 1) if self.per_channel else r
        if self.per_channel:
            return (w.abs().amax(dim=(1, 2, 3)) / self.qmax).view(-1, 1, 1, 1)
        return w.abs().max() / self.qmax

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` rounded to the nearest grid point (fake quantization, float result)."""
        return fake_quant(w.float(), self.scale(w), self.qmax)

    def integers(self, w: torch.Tensor) -> torch.Tensor:
        """The grid integers ``q`` of ``w`` (int32, same shape) with its own scale."""
        s = self.scale(w)
        s = torch.where(s > 0, s, torch.ones_like(s))
        return torch.clamp(torch.round(w.detach().float() / s), -self.qmax, self.qmax).to(torch.int32)

    def to_dict(self) -> dict:
        return {"qmax": self.qmax, "per_channel": self.per_channel, "symmetric": True, "weight_range": self.weight_range}


class QuantLayer(NamedTuple):
    """One convolution a backend quantizes: torch module path (``model.2.cv1.conv``), the ``nn.Conv2d``
    and the tensor holding its bias (the folded BN's ``bias`` or the conv's own)."""

    name: str
    conv: nn.Conv2d
    bias: torch.Tensor


def folded_copy(model) -> nn.Module:
    """A copy of ``model`` (eval, float32) with every BatchNorm folded into its convolution, the state
    dict's keys kept (BN as ``x + shift``): the same function, the same checkpoint layout."""
    from ..deploy.surgery import fuse_conv_bn

    return fuse_conv_bn(model.float().eval(), keep_bn=True).requires_grad_(False)


def quant_layers(model, skip: Iterable[str] = ()) -> list[QuantLayer]:
    """The convolutions of a folded model (:func:`folded_copy`) in forward order, without those whose
    name is in ``skip`` or starts with a ``skip`` entry followed by ``.`` (layers kept in float)."""
    skip = tuple(s.strip(".") for s in skip if s)
    from ..deploy.surgery import sequential_conv_bn

    bns = {id(mod.conv): mod.bn for mod in model.modules()
           if isinstance(getattr(mod, "conv", None), nn.Conv2d) and isinstance(getattr(mod, "bn", None), nn.BatchNorm2d)}
    bns.update({id(conv): bn for conv, bn in sequential_conv_bn(model)})  # yolov5-face's bare Conv2d -> BN pairs
    found = []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d) or any(name == s or name.startswith(s + ".") for s in skip):
            continue
        bn = bns.get(id(conv))
        if isinstance(bn, nn.BatchNorm2d):
            bias = bn.bias
        else:
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels), requires_grad=False)
            bias = conv.bias
        found.append(QuantLayer(name, conv, bias))
    order = forward_order(model, [q.conv for q in found])
    by_conv = {id(q.conv): q for q in found}
    return [by_conv[id(c)] for c in order]


def torch_batches(images) -> Iterator[torch.Tensor]:
    """Float32 torch batches from ``images``: a CalibrationSet (one image a batch), arrays
    ``[B, 3, H, W]`` or a list of them."""
    if isinstance(images, np.ndarray) or isinstance(images, torch.Tensor):
        images = [images]
    for x in images:
        yield torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


@torch.no_grad()
def raw_outputs(model, images) -> list[np.ndarray]:
    """The Detect convolutions' outputs ``[B, na, H, W, no]`` per level (float64 numpy), over all
    ``images`` concatenated: what a PTQ step's output SQNR is measured on."""
    per_level: list[list[np.ndarray]] = []
    for x in torch_batches(images):
        _, raw = model(x)
        for i, r in enumerate(raw):
            if len(per_level) <= i:
                per_level.append([])
            per_level[i].append(r.double().numpy())
    return [np.concatenate(level, 0) for level in per_level]


def weights_on_grid(model, grid: WeightGrid, skip: Iterable[str] = ()) -> nn.Module:
    """A copy of the folded ``model`` with the weights of its quantized convolutions rounded to the
    nearest point of ``grid``: what a backend's weight quantizer makes of them (activations float)."""
    import copy

    m = copy.deepcopy(model)
    for layer in quant_layers(m, skip):
        layer.conv.weight.data = grid.quantize(layer.conv.weight.data)
    return m
