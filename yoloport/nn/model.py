"""``DetectionModel``: a YOLOv5 network built from a model YAML (Ultralytics' format).

The YAML is data: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and the ``backbone`` +
``head`` layer lists ``[from, number, module, args]``. Parsing follows Ultralytics' ``parse_model`` so
that official configs and checkpoints (which carry their own YAML) build the identical network.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import yaml
from torch import nn

from ..errors import YoloportError
from .modules import (
    C3,
    SPP,
    SPPF,
    ActivationDefault,
    Bottleneck,
    BottleneckCSP,
    Concat,
    Conv,
    Detect,
    Focus,
)
from .face_modules import BlazeBlock, DoubleBlazeBlock, ShuffleV2Block, StemBlock

CFG_DIR = Path(__file__).parent / "cfg"

# Module names allowed in a YAML (looked up, never eval'd).
MODULES = {
    "Conv": Conv,
    "Bottleneck": Bottleneck,
    "BottleneckCSP": BottleneckCSP,
    "C3": C3,
    "Focus": Focus,
    "SPP": SPP,
    "SPPF": SPPF,
    "Concat": Concat,
    "Detect": Detect,
    "nn.Upsample": nn.Upsample,
    "Upsample": nn.Upsample,
    "nn.BatchNorm2d": nn.BatchNorm2d,
    "StemBlock": StemBlock,
    "ShuffleV2Block": ShuffleV2Block,
    "BlazeBlock": BlazeBlock,
    "DoubleBlazeBlock": DoubleBlazeBlock,
}
CHANNEL_MODULES = (Conv, Bottleneck, BottleneckCSP, C3, Focus, SPP, SPPF, StemBlock, ShuffleV2Block, BlazeBlock, DoubleBlazeBlock)
REPEAT_INSIDE = (BottleneckCSP, C3)


def make_divisible(x: float, divisor: int) -> int:
    return int(math.ceil(x / divisor) * divisor)


def resolve_cfg(cfg) -> dict:
    """A model YAML path, a bundled config name (``yolov5s``, ``yolov5s-v5.0``) or a dict -> dict copy."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    p = Path(cfg)
    if not p.exists():
        for candidate in (CFG_DIR / f"{cfg}.yaml", CFG_DIR / p.name):
            if candidate.is_file():
                p = candidate
                break
    if not p.exists():
        known = ", ".join(sorted(x.stem for x in CFG_DIR.glob("*.yaml")))
        raise YoloportError(f"model config {cfg} not found (bundled configs: {known})")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise YoloportError(f"model config {p} is not valid YAML: {e}") from None
    if not isinstance(d, dict) or "backbone" not in d or "head" not in d:
        raise YoloportError(f"model config {p} has no 'backbone'/'head' lists: not a YOLOv5 model YAML")
    d.setdefault("yaml_file", p.name)
    return d


def _resolve_arg(a, nc, anchors):
    if isinstance(a, str):
        if a == "nc":
            return nc
        if a == "anchors":
            return anchors
        if a == "None":
            return None
        try:
            return int(a)
        except ValueError:
            return a
    return a


def head_keypoints(d: dict) -> int:
    """The number of keypoints (landmarks) per box a model YAML's head predicts: its ``nkpt`` key
    (``5`` for yolov5-face), ``0`` for a plain detector."""
    k = d.get("nkpt", 0) or 0
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise YoloportError(f"model config: nkpt must be a non-negative integer (keypoints per box), got {k!r}")
    return k


def parse_model(d: dict, ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Build the layer list; returns ``(nn.Sequential, save)`` where ``save`` lists the layers whose
    outputs later layers read."""
    anchors, nc = d["anchors"], d["nc"]
    nkpt = head_keypoints(d)
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    ActivationDefault.spec = d.get("activation") or "SiLU"
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m not in MODULES:
            raise YoloportError(f"layer {i}: module {m!r} is not a YOLOv5 module yoloport knows ({', '.join(MODULES)})")
        mod = MODULES[m]
        args = [_resolve_arg(a, nc, anchors) for a in args]
        n = n_ = max(round(n * gd), 1) if n > 1 else n
        if mod in CHANNEL_MODULES:
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if mod in REPEAT_INSIDE:
                args.insert(2, n)
                n = 1
        elif mod is nn.BatchNorm2d:
            args = [ch[f]]
        elif mod is Concat:
            c2 = sum(ch[x] for x in f)
        elif mod is Detect:
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
        else:
            c2 = ch[f]
        if mod is Detect:
            m_ = Detect(*args, nkpt=nkpt)
        else:
            m_ = nn.Sequential(*(mod(*args) for _ in range(n))) if n > 1 else mod(*args)
        m_.i, m_.f, m_.type = i, f, m.replace("nn.", "")
        m_.np = sum(x.numel() for x in m_.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    ActivationDefault.spec = "SiLU"
    return nn.Sequential(*layers), sorted(save)


class DetectionModel(nn.Module):
    """YOLOv5 detector built from a model YAML.

    ``names`` are the class names, ``stride`` a tensor ``[nl]``; ``img_size`` the ``(h, w)`` the
    model was trained or registered for (metadata only).
    """

    def __init__(self, cfg="yolov5s", ch: int = 3, nc: int | None = None, anchors=None, names=None):
        super().__init__()
        self.yaml = resolve_cfg(cfg)
        if nc is not None and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        if anchors is not None:
            self.yaml["anchors"] = anchors
        self.yaml["ch"] = ch = self.yaml.get("ch", ch)
        self.model, self.save = parse_model(self.yaml, ch=[ch])
        nc = self.yaml["nc"]
        self.names = list(names) if names else [str(i) for i in range(nc)]
        self.img_size: tuple[int, int] | None = None
        m = self.detect
        s = 256
        m.inplace = self.yaml.get("inplace", True)
        with torch.no_grad():
            self.train()
            feats = self.forward(torch.zeros(1, ch, s, s))
        m.stride = torch.tensor([s / x.shape[-2] for x in feats])
        m.anchors /= m.stride.view(-1, 1, 1)
        check_anchor_order(m)
        self.stride = m.stride
        self._initialize_biases()
        initialize_weights(self)

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    @property
    def nc(self) -> int:
        return self.detect.nc

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _initialize_biases(self, cf=None):
        """Objectness and class priors (https://arxiv.org/abs/1708.02002 section 3.3), as YOLOv5."""
        m = self.detect
        for mi, s in zip(m.m, m.stride):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            c0 = m.class_offset
            b.data[:, c0 : c0 + m.nc] += math.log(0.6 / (m.nc - 0.99999)) if cf is None else torch.log(cf / cf.sum())
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)

    def info(self, img_size=640) -> dict:
        """Summary: layers (modules), parameters, gradients and GFLOPs at ``img_size`` (int or (h, w))."""
        from .summary import model_summary

        return model_summary(self, img_size)


def check_anchor_order(m: Detect) -> None:
    """Flip the anchor levels if their size order disagrees with the stride order."""
    a = m.anchors.prod(-1).mean(-1).view(-1)
    da = a[-1] - a[0]
    ds = m.stride[-1] - m.stride[0]
    if da and (da.sign() != ds.sign()):
        m.anchors[:] = m.anchors.flip(0)


def initialize_weights(model: nn.Module) -> None:
    """BatchNorm eps/momentum as YOLOv5 trains them (1e-3, 0.03); activations in place."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True
