"""Backbone blocks of the yolov5-face family that vanilla YOLOv5 lacks.

Attribute names follow the upstream checkpoints (``stem_1``, ``branch2.3``...), so an imported
state dict maps onto them one to one. Activations are SiLU, as in the published yolov5-face models.
"""
from __future__ import annotations

import torch
from torch import nn

from .modules import Conv


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C, H, W]`` with channels interleaved across ``groups`` (ShuffleNet).

    Through a 4-D ``[B, groups, C/groups, H*W]`` view (not upstream's 5-D one, same values), so the
    exported graph has no rank-5 tensor for NPU toolchains to reject."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h * w).transpose(1, 2).reshape(b, c, h, w)


def _depthwise(c: int, k: int, s: int, p: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, k, s, p, groups=c, bias=False)


class StemBlock(nn.Module):
    """Stride-4 stem: a stride-``s`` Conv, then a conv branch (1x1 halving, 3x3 stride 2) and a
    ceil-mode 2x2 max-pool branch side by side, joined by a 1x1 Conv. ``[B, c1, H, W] -> [B, c2, H/4, W/4]``."""

    def __init__(self, c1, c2, k=3, s=2, p=None, g=1, act=True):
        super().__init__()
        self.stem_1 = Conv(c1, c2, k, s, p, g, act=act)
        self.stem_2a = Conv(c2, c2 // 2, 1, 1, 0)
        self.stem_2b = Conv(c2 // 2, c2, 3, 2, 1)
        self.stem_2p = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.stem_3 = Conv(c2 * 2, c2, 1, 1, 0)

    def forward(self, x):
        s1 = self.stem_1(x)
        return self.stem_3(torch.cat((self.stem_2b(self.stem_2a(s1)), self.stem_2p(s1)), 1))


class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 unit. ``stride == 1``: split the channels in two halves, transform one
    (1x1, depthwise 3x3, 1x1), concatenate, shuffle (``c1 == c2``). ``stride > 1``: both branches see
    the whole input and each gives ``c2 / 2`` channels at half the resolution."""

    def __init__(self, c1, c2, stride=1):
        super().__init__()
        if stride not in (1, 2, 3):
            raise ValueError(f"ShuffleV2Block stride must be 1, 2 or 3, got {stride}")
        self.stride = stride
        half = c2 // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(c1, 3, stride, 1), nn.BatchNorm2d(c1),
                nn.Conv2d(c1, half, 1, 1, 0, bias=False), nn.BatchNorm2d(half), nn.SiLU(),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(c1 if stride > 1 else half, half, 1, 1, 0, bias=False), nn.BatchNorm2d(half), nn.SiLU(),
            _depthwise(half, 3, stride, 1), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, 1, 0, bias=False), nn.BatchNorm2d(half), nn.SiLU(),
        )

    def forward(self, x):
        if self.stride == 1:
            keep, transform = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch2(transform)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


def _pool_shortcut(c1: int, c2: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.MaxPool2d(kernel_size=stride, stride=stride), nn.Conv2d(c1, c2, 1, 1), nn.BatchNorm2d(c2), nn.SiLU(),
    )


class _BlazeResidual(nn.Module):
    """What both Blaze blocks share: ``SiLU(branch1(x) + x)``, or with a max-pool + 1x1 ``shortcut`` when
    the block strides. A subclass builds ``branch1``."""

    def __init__(self, c1: int, c2: int, stride: int, name: str):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"{name} stride must be 1 or 2, got {stride}")
        self.use_pool = stride > 1
        if self.use_pool:
            self.shortcut = _pool_shortcut(c1, c2, stride)
        self.relu = nn.SiLU()

    def forward(self, x):
        y = self.branch1(x)
        return self.relu(y + (self.shortcut(x) if self.use_pool else x))


class BlazeBlock(_BlazeResidual):
    """BlazeFace single block: depthwise 5x5 (stride 1 or 2) + 1x1, added to the input (or to a
    max-pool + 1x1 shortcut when striding), then SiLU."""

    def __init__(self, c1, c2, mid=None, stride=1):
        super().__init__(c1, c2, stride, "BlazeBlock")
        mid = mid or c1
        self.branch1 = nn.Sequential(
            nn.Conv2d(c1, mid, 5, stride, 2, groups=c1), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, c2, 1, 1), nn.BatchNorm2d(c2),
        )


class DoubleBlazeBlock(_BlazeResidual):
    """BlazeFace double block: two depthwise 5x5 + 1x1 stages (``c1 -> mid -> c2``) with a residual
    (max-pool + 1x1 shortcut when striding), then SiLU."""

    def __init__(self, c1, c2, mid=None, stride=1):
        super().__init__(c1, c2, stride, "DoubleBlazeBlock")
        mid = mid or c1
        self.branch1 = nn.Sequential(
            nn.Conv2d(c1, c1, 5, stride, 2, groups=c1), nn.BatchNorm2d(c1),
            nn.Conv2d(c1, mid, 1, 1), nn.BatchNorm2d(mid), nn.SiLU(),
            nn.Conv2d(mid, mid, 5, 1, 2, groups=mid), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, c2, 1, 1), nn.BatchNorm2d(c2),
        )
