"""YOLOv5 building blocks. Module and attribute names match Ultralytics' so checkpoints map 1:1.

Each block says what the network is and nothing else; the Detect head's export variants live in
``yoloport.nn.heads`` and are chosen by ``Detect.export_mode``.
"""
from __future__ import annotations

import re

import torch
from torch import nn

_ACTIVATIONS = {
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "leakyrelu": nn.LeakyReLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(spec: str | None = "SiLU") -> nn.Module:
    """An activation from a name such as ``'SiLU'``, ``'nn.LeakyReLU(0.1)'`` or ``'Hardswish'`` (no eval)."""
    if spec is None:
        return nn.SiLU()
    m = re.fullmatch(r"\s*(?:nn\.|torch\.nn\.)?(\w+)\s*(?:\((.*)\))?\s*", str(spec))
    if not m or m.group(1).lower() not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {spec!r}; known: {', '.join(sorted(_ACTIVATIONS))}")
    cls = _ACTIVATIONS[m.group(1).lower()]
    args = [float(a) for a in m.group(2).split(",") if a.strip() and "=" not in a] if m.group(2) else []
    return cls(*args)


class ActivationDefault:
    """The activation new Conv blocks get (a model YAML's ``activation`` key sets it while building)."""

    spec: str = "SiLU"


def autopad(k, p=None, d: int = 1):
    """'same' padding for kernel ``k`` (int or list) and dilation ``d``."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + activation (SiLU by default)."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = make_activation(ActivationDefault.spec)
        else:
            self.act = act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv with an optional residual add (when shapes allow)."""

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class BottleneckCSP(nn.Module):
    """CSP bottleneck of YOLOv5 up to v4.0 (https://github.com/WongKinYiu/CrossStagePartialNetworks)."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = make_activation(ActivationDefault.spec)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), 1))))


class C3(nn.Module):
    """CSP bottleneck with three convolutions (YOLOv5 v4.0+)."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, 4C, H/2, W/2]`` in Focus' order: (even,even), (odd,even), (even,odd), (odd,odd)."""
    return torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)


class Focus(nn.Module):
    """Space-to-depth then Conv (YOLOv5 up to v5.0). Equivalent to one 6x6 stride-2 Conv."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x):
        return self.conv(space_to_depth(x))


class SPP(nn.Module):
    """Spatial pyramid pooling with parallel max-pools (YOLOv3-SPP, YOLOv5 up to v5.0)."""

    def __init__(self, c1, c2, k=(5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: three chained 5x5 max-pools, equal to SPP(k=(5, 9, 13)) (YOLOv5 v6.0+)."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """YOLOv5 detection head: one 1x1 conv per level giving ``na * no`` channels.

    ``no = 5 + 2 * nkpt + nc``. A plain detector (``nkpt = 0``) orders each anchor's channels
    ``x y w h obj cls...``; a keypoint head (yolov5-face, ``nkpt = 5``) ``x y w h obj k1x k1y ... cls...``:
    the keypoints are not squashed by the sigmoid and decode as ``raw * anchor_px + cell * stride``.
    Decoded rows always put keypoints last: ``x y w h obj cls... k1x k1y ...`` (pixels).

    ``anchors`` is a buffer ``[nl, na, 2]`` in grid units of each level (pixels / stride), as in
    Ultralytics checkpoints. Forward:

    - training: list of raw ``[B, na, H, W, no]`` tensors (what the loss consumes);
    - eval: ``(decoded [B, N, no], raw list)`` with xywh in input pixels, like Ultralytics;
    - ``export_mode`` set (``raw``, ``split``, ``decoded``, ``end2end``): the graph-friendly variants
      of ``yoloport.nn.heads``.
    """

    stride: torch.Tensor | None = None

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True, nkpt: int = 0):
        super().__init__()
        self.nc = nc
        self.nkpt = int(nkpt)
        self.no = nc + 5 + 2 * self.nkpt
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace
        self.export_mode: str | None = None
        self.export_options: dict = {}

    @property
    def class_offset(self) -> int:
        """Channel of the first class score in each anchor's raw outputs (after the keypoints)."""
        return 5 + 2 * self.nkpt

    def anchors_px(self) -> torch.Tensor:
        """``[nl, na, 2]`` anchors in input pixels."""
        return self.anchors * self.stride.view(-1, 1, 1).to(self.anchors)

    def forward(self, feats: list[torch.Tensor]):
        if self.export_mode is not None:
            from .heads import export_forward

            return export_forward(self, feats)
        raw = []
        for i in range(self.nl):
            x = self.m[i](feats[i])
            b, _, h, w = x.shape
            raw.append(x.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        return torch.cat([self.decode_level(x, i) for i, x in enumerate(raw)], 1), raw

    def decode_level(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Raw ``[B, na, H, W, no]`` of level ``i`` -> decoded ``[B, na*H*W, no]`` (no in-place ops)."""
        b, na, h, w, no = x.shape
        y = x.sigmoid()
        ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
        grid = torch.stack((xs, ys), 2).view(1, 1, h, w, 2).to(y.dtype)
        anchor = (self.anchors[i] * self.stride[i]).view(1, na, 1, 1, 2).to(y.dtype)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.stride[i]
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        if not self.nkpt:
            return torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, no)
        c0 = self.class_offset
        kpt = x[..., 5:c0].reshape(b, na, h, w, self.nkpt, 2) * anchor.unsqueeze(-2) + (grid * self.stride[i]).unsqueeze(-2)
        return torch.cat((xy, wh, y[..., 4:5], y[..., c0:], kpt.reshape(b, na, h, w, -1)), -1).view(b, -1, no)
