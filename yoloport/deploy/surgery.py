"""Exact rewrites of a DetectionModel before export (each returns a modified deep copy).

- :func:`fuse_conv_bn`: Conv2d + BatchNorm2d -> one Conv2d with bias (``Conv.forward_fuse``);
  ``keep_bn=True`` instead folds the BN into the conv weights and leaves an identity-scale BN that
  carries the shift, so the state dict still matches the model YAML (for saved checkpoints).
- :func:`focus_to_conv`: the v5.0 ``Focus`` stem (space-to-depth + k x k conv) -> one
  ``Conv(c1, c2, 2k, 2, 2p)`` with rearranged weights, as YOLOv5 v6.0 did; the model YAML's layer 0
  is rewritten so a saved checkpoint rebuilds.
- :func:`silu_to_x_sigmoid`: ``nn.SiLU`` -> ``x * sigmoid(x)`` modules (``--silu mul-sigmoid``). The
  TorchScript exporter already lowers SiLU to Sigmoid + Mul at opsets 11..19 (ONNX has no SiLU op
  there), so the graph is the same today; the rewrite pins that form for exporters that would emit
  a fused Swish/SiLU node a target cannot run.
- :func:`simplify_onnx`: onnxslim on an ``onnx.ModelProto``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import DependencyMissing, YoloportError
from ..nn.modules import Conv, Focus

# ----------------------------------------------------------------------------- Conv + BN


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight [c2, c1/g, k, k], bias [c2])`` of the conv equal to ``bn(conv(x))`` (eval BN)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w_f = w * scale.view(-1, 1, 1, 1)
    b_f = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w_f.to(conv.weight.dtype), b_f.to(conv.weight.dtype)


def fuse_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d with bias equal to ``bn(conv(x))`` in eval mode (folded in float64)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    w, b = fold_bn(conv, bn)
    with torch.no_grad():
        fused.weight.copy_(w)
        fused.bias.copy_(b)
    return fused.requires_grad_(False)


def fuse_conv_bn(model, keep_bn: bool = False):
    """Copy of ``model`` with every ``Conv`` block's BatchNorm folded into its conv.

    Default: the BN is removed and the block runs ``forward_fuse`` (conv with bias + activation):
    the graph to export. ``keep_bn=True``: weights folded, BN kept as ``x + shift`` (weight 1, mean 0,
    var ``1 - eps``) so the state dict keeps the YAML's keys and a saved checkpoint rebuilds.
    """
    m = copy.deepcopy(model).eval()
    if keep_bn:  # also the bare Conv2d -> BatchNorm2d pairs of yolov5-face's blocks (ShuffleV2Block, ...)
        for conv, bn in sequential_conv_bn(m):
            _fold_keeping_bn(conv, bn)
    for mod in m.modules():
        if isinstance(mod, Conv) and isinstance(getattr(mod, "bn", None), nn.BatchNorm2d):
            if keep_bn:
                _fold_keeping_bn(mod.conv, mod.bn)
            else:
                mod.conv = fuse_conv(mod.conv, mod.bn)
                del mod.bn
                mod.forward = mod.forward_fuse
    m.fused = not keep_bn
    return m


def sequential_conv_bn(model) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """``(conv, bn)`` for every bare ``nn.Conv2d`` directly followed by an ``nn.BatchNorm2d`` inside an
    ``nn.Sequential`` (yolov5-face's ShuffleV2Block branches); ``Conv`` blocks are not included."""
    pairs = []
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.children())
            pairs += [(a, b) for a, b in zip(kids, kids[1:]) if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    return pairs


def _fold_keeping_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv``'s weight in place; ``bn`` becomes ``x + shift`` (the folded bias; the conv keeps
    no bias of its own, so the state dict keeps its keys)."""
    w, b = fold_bn(conv, bn)
    with torch.no_grad():
        conv.weight.copy_(w)
        if conv.bias is not None:
            conv.bias.zero_()
        bn.weight.fill_(1.0)
        bn.bias.copy_(b)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


# ----------------------------------------------------------------------------- Focus -> Conv

# space_to_depth channel groups (Focus order) and the (row, col) offset each samples.
_S2D_OFFSETS = ((0, 0), (1, 0), (0, 1), (1, 1))


def focus_weight_to_conv(w: torch.Tensor) -> torch.Tensor:
    """Focus conv weight ``[c2, 4*c1, k, k]`` -> equivalent stride-2 weight ``[c2, c1, 2k, 2k]``.

    Group ``g`` of the space-to-depth input samples pixel ``(2i + dy_g, 2j + dx_g)``, so tap
    ``(ki, kj)`` of channel ``g*c1 + c`` lands on tap ``(2 ki + dy_g, 2 kj + dx_g)`` of channel ``c``.
    """
    c2, c4, k, k2 = w.shape
    if c4 % 4 or k != k2:
        raise ValueError(f"not a Focus conv weight: {tuple(w.shape)}")
    c1 = c4 // 4
    out = w.new_zeros(c2, c1, 2 * k, 2 * k)
    for g, (dy, dx) in enumerate(_S2D_OFFSETS):
        out[:, :, dy::2, dx::2] = w[:, g * c1:(g + 1) * c1]
    return out


def focus_to_conv(model):
    """Copy of ``model`` whose ``Focus`` layers are replaced by the equivalent strided ``Conv``.

    Focus(k, s=1, p=k//2) on a ``[B, c1, H, W]`` input equals ``Conv(c1, c2, 2k, 2, 2p)`` (k=3: the
    v6.0 stem ``Conv(3, 64, 6, 2, 2)``). BN and activation are moved over unchanged; the YAML entry
    becomes ``[from, 1, Conv, [c2, 2k, 2, 2p]]``. Returns the model unchanged (a copy) if it has no
    Focus. Exact up to float summation order.
    """
    m = copy.deepcopy(model)
    n = 0
    for idx, layer in enumerate(m.model):
        if not isinstance(layer, Focus):
            continue
        fc = layer.conv.conv
        k, s, p, g = fc.kernel_size[0], fc.stride[0], fc.padding[0], fc.groups
        if s != 1 or g != 1 or fc.dilation[0] != 1 or fc.kernel_size[0] != fc.kernel_size[1] or p != k // 2:
            raise YoloportError(f"layer {idx}: Focus with stride {s}, groups {g}, padding {p} has no single-conv equivalent")
        c1, c2 = fc.in_channels // 4, fc.out_channels
        new = Conv(c1, c2, 2 * k, 2, 2 * p).to(device=fc.weight.device, dtype=fc.weight.dtype)
        with torch.no_grad():
            new.conv.weight.copy_(focus_weight_to_conv(fc.weight.detach()))
        if hasattr(layer.conv, "bn"):
            new.bn = layer.conv.bn
        else:  # already fused: conv carries the bias
            new.conv = _with_bias(new.conv, fc.bias)
            new.forward = new.forward_fuse
            del new.bn
        new.act = layer.conv.act
        new.i, new.f, new.type = layer.i, layer.f, "Conv"
        new.np = sum(x.numel() for x in new.parameters())
        new.train(layer.training)
        m.model[idx] = new
        _rewrite_yaml_focus(m.yaml, idx, 2 * k, 2 * p)
        n += 1
    m.focus_converted = n
    return m


def focus_converted_path(module_path: str) -> str | None:
    """Where a Focus stem's convolution lives after :func:`focus_to_conv`: ``model.N.conv.conv`` (the
    Focus' Conv's Conv2d) -> ``model.N.conv`` (the new Conv's Conv2d); None for any other path. Lets
    names from the checkpoint's modules (the sensitivity ranking, ``--exclude``) find their node in a
    graph exported with the surgery."""
    parts = module_path.split(".")
    if len(parts) == 4 and parts[0] == "model" and parts[1].isdigit() and parts[2:] == ["conv", "conv"]:
        return ".".join(parts[:3])
    return None


def _with_bias(conv: nn.Conv2d, bias: torch.Tensor | None) -> nn.Conv2d:
    """``conv`` (no bias) as a conv with ``bias`` (zeros when None), for already-fused Focus layers."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight)
        fused.bias.copy_(bias if bias is not None else torch.zeros(conv.out_channels))
    return fused


def _rewrite_yaml_focus(cfg: dict, idx: int, k: int, p: int) -> None:
    """Layer ``idx`` of the YAML (backbone then head) ``Focus [c2, k0, ...]`` -> ``Conv [c2, k, 2, p]``."""
    nb = len(cfg["backbone"])
    section, j = ("backbone", idx) if idx < nb else ("head", idx - nb)
    f, n, mod, args = cfg[section][j]
    if mod != "Focus":
        raise YoloportError(f"model YAML layer {idx} is {mod}, expected Focus")
    cfg[section][j] = [f, n, "Conv", [args[0], k, 2, p]]


# ----------------------------------------------------------------------------- SiLU


class MulSigmoid(nn.Module):
    """``x * sigmoid(x)`` written out (ONNX: Sigmoid + Mul) for targets without a SiLU/Swish kernel."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def silu_to_x_sigmoid(model):
    """Copy of ``model`` with every ``nn.SiLU`` replaced by :class:`MulSigmoid` (numerically equal)."""
    m = copy.deepcopy(model)
    for parent in m.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.SiLU):
                setattr(parent, name, MulSigmoid())
    return m


# ----------------------------------------------------------------------------- ONNX simplify


def simplify_onnx(model_proto):
    """onnxslim's simplification (constant folding, dead-node and shape-op removal) of a ModelProto."""
    try:
        import onnxslim
    except ImportError:
        raise DependencyMissing("onnxslim", "--simplify") from None
    return onnxslim.slim(model_proto)
