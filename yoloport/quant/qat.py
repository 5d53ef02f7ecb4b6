"""Quantization-aware fine-tuning: fake quantization with learned ranges that mirrors a backend's int8 scheme.

:func:`wrap_for_qat` replaces every convolution of a ``DetectionModel`` that the backend quantizes by a
module that fake-quantizes, on the backend's grid (:class:`QatScheme`, read from its ``BackendSpec``):

- its **input**: ``asymmetric`` uint8 (scale and zero point; ONNX Runtime U8S8, OpenVINO, RKNN
  asymmetric_quantized-8) or ``symmetric`` int8 (scale only; the MLU). The first convolution takes the
  image, which is exactly uint8 (``scale = 1/255``, zero point 0, not learned);
- its **weight**: symmetric int8 ``[-127, 127]``, per output channel or per tensor. A ``Conv`` block's
  BatchNorm is folded into the weight first (frozen statistics: ``w * gamma / sqrt(var + eps)``,
  bias ``beta - mean * gamma / sqrt(var + eps)``), so the grid is the one the exported, BN-fused graph
  has. The block keeps its ``conv``/``bn``/``act`` parameters, so the state dict keeps the model's keys;
  ``bn`` itself is never called (its running statistics do not move);
- with ``quantize_outputs`` (backends whose QDQ graph rounds each convolution's output: ONNX Runtime,
  ``BackendSpec.qdq_rounds_conv_outputs``) its **output** before the activation, asymmetric uint8.

Scales and zero points are trainable (LSQ: :func:`~yoloport.quant.fake_quant.fake_quant_learned`,
straight-through rounding) and start from the post-training ranges of calibration images
(:func:`init_ranges`: where each backend's PTQ default puts them: ONNX Runtime's SiLU-aware conv-output
grids, mlu-sim's MSE input ranges, MinMax elsewhere). The layers the backend keeps in float (``head_fp32='convs'``:
the Detect convolutions; the float scope's ``layers``) are left as they are; the decode after the
last convolutions is float on every backend and is not touched.

After training, :func:`learned_ranges` gives the grid of every layer as plain numbers (what the QDQ
export and mlu-sim's artifact take) and :func:`float_model` the trained weights as an ordinary
``DetectionModel``; :func:`rebuild` turns those two back into the fake-quantized model.
:class:`QatHook` is the hook :func:`yoloport.engine.train.train` takes to run its loop on the wrapped model.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import YoloportError
from .fake_quant import asymmetric_grid, fake_quant_learned, forward_order, weight_scale
from .float_scope import scope_from_qconfig

ACT_GRIDS = {"asymmetric": (0, 255), "symmetric": (-127, 127), "image": (0, 255)}
WEIGHT_QMAX = 127
QAT_PREFIX = "qat_"  # quantizer submodules: model.2.cv1.qat_input.scale ... (never a float weight)
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class QatScheme:
    """The int8 grid a backend runs, as QAT emulates it.

    - ``activations``: ``asymmetric`` (uint8 + zero point) or ``symmetric`` (int8, no zero point);
    - ``per_channel_weights``: symmetric int8 weights per output channel (else per tensor);
    - ``quantize_outputs``: also round each quantized convolution's output (pre-activation);
    - ``head_fp32``: ``convs`` keeps the Detect convolutions in float (``tail``/``none``: quantized);
    - ``float_layers``: convolutions (torch module paths) kept in float.
    """

    activations: str = "asymmetric"
    per_channel_weights: bool = True
    quantize_outputs: bool = False
    head_fp32: str = "tail"
    float_layers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.activations not in ("asymmetric", "symmetric"):
            raise YoloportError(f"QAT activations must be asymmetric or symmetric, got {self.activations!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["float_layers"] = list(self.float_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QatScheme":
        return cls(str(d["activations"]), bool(d["per_channel_weights"]), bool(d["quantize_outputs"]),
                   str(d["head_fp32"]), tuple(d.get("float_layers") or ()))


def scheme_for(spec, qconfig: dict | None = None) -> QatScheme:
    """The scheme of a backend (its :class:`~yoloport.backends.spec.BackendSpec`: ``act_scheme``,
    ``weights_per_channel(qconfig)``, ``qdq_rounds_conv_outputs``, ``head_fp32(qconfig)`` and the float
    scope's layers). Graph node names in the float scope have no meaning for the torch model: refused."""
    scope = scope_from_qconfig(qconfig, spec.head_fp32(qconfig))
    if scope.nodes:
        raise YoloportError(f"QAT keeps layers in float by torch module path (float_scope layers), not by graph node "
                            f"({', '.join(scope.nodes[:3])})")
    return QatScheme(spec.act_scheme, bool(spec.weights_per_channel(qconfig)), bool(spec.qdq_rounds_conv_outputs),
                     scope.head, tuple(scope.layers))


# ----------------------------------------------------------------------------- quantizers


class ActQuant(nn.Module):
    """Fake quantization of an activation tensor on a learned grid.

    ``kind``: ``asymmetric`` (uint8, learned ``scale`` and ``zero_point``), ``symmetric`` (int8,
    learned ``scale``) or ``image`` (uint8, ``scale = 1/255``, fixed: the network input). While
    ``observing`` it records the tensor's min/max and passes it through unchanged.
    """

    def __init__(self, kind: str):
        super().__init__()
        if kind not in ACT_GRIDS:
            raise YoloportError(f"activation grid {kind!r}: choose one of {', '.join(ACT_GRIDS)}")
        self.kind = kind
        self.qmin, self.qmax = ACT_GRIDS[kind]
        if kind == "image":
            self.register_buffer("scale", torch.tensor(1.0 / 255.0))
            self.register_buffer("zero_point", torch.tensor(0.0))
        else:
            self.scale = nn.Parameter(torch.tensor(1.0))
            if kind == "asymmetric":
                self.zero_point = nn.Parameter(torch.tensor(0.0))
            else:  # symmetric: no zero point (a buffer, so no optimiser ever moves it)
                self.register_buffer("zero_point", torch.tensor(0.0))
        self.observing = False
        self.lo, self.hi = math.inf, -math.inf
        self.hist = None  # while observing: counts of x over [lo, hi] (a second pass) instead of its min/max
        self.abs_hist = None  # while observing, if set: an AbsHistogram of |x| filled beside the min/max (one pass)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            if self.hist is not None:
                self.hist += torch.histc(x.detach().float(), bins=self.hist.numel(), min=self.lo, max=self.hi)
                return x
            self.lo = min(self.lo, float(x.detach().min()))
            self.hi = max(self.hi, float(x.detach().max()))
            if self.abs_hist is not None:
                self.abs_hist.add(x)
            return x
        g = 1.0 / math.sqrt(max(x[0].numel(), 1) * self.qmax)
        z = torch.clamp(self.zero_point, self.qmin, self.qmax)
        return fake_quant_learned(x, self.scale.clamp_min(MIN_SCALE), z, self.qmin, self.qmax, g)

    @torch.no_grad()
    def init_from_observed(self) -> dict:
        """Set the grid from the observed ``[lo, hi]`` (asymmetric: :func:`asymmetric_grid`; symmetric:
        ``max |x| / 127``); returns ``{lo, hi, scale, zero_point}``."""
        if self.kind != "image":
            if not math.isfinite(self.lo):
                raise YoloportError("QAT calibration: a quantized convolution never ran on the calibration images")
            if self.kind == "asymmetric":
                grid = asymmetric_grid(self.lo, self.hi) or (MIN_SCALE, 0.0)
            else:
                grid = (max(abs(self.lo), abs(self.hi), MIN_SCALE * 127) / 127.0, 0.0)
            self.scale.fill_(grid[0])
            self.zero_point.fill_(grid[1])
        return {"lo": self.lo, "hi": self.hi, **self.grid()}

    def grid(self) -> dict:
        """``{scale, zero_point, qmin, qmax}`` as they run (zero point rounded and clipped)."""
        z = float(np.clip(round(float(self.zero_point.detach())), self.qmin, self.qmax))
        return {"scale": max(float(self.scale.detach()), MIN_SCALE), "zero_point": z, "qmin": self.qmin, "qmax": self.qmax}

    @torch.no_grad()
    def set_grid(self, grid: dict) -> None:
        if self.kind != "image":
            self.scale.fill_(float(grid["scale"]))
            self.zero_point.fill_(float(grid.get("zero_point", 0.0)))


class WeightQuant(nn.Module):
    """Symmetric int8 fake quantization ``[-127, 127]`` of a weight ``[C, Cin/g, k, k]`` with a learned
    scale per output channel (``[C]``) or per tensor (``[1]``)."""

    def __init__(self, channels: int, per_channel: bool):
        super().__init__()
        self.per_channel = per_channel
        self.scale = nn.Parameter(torch.ones(channels if per_channel else 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(max(w[0].numel(), 1) * WEIGHT_QMAX)
        s = self.scale.clamp_min(MIN_SCALE).view(-1, 1, 1, 1)
        return fake_quant_learned(w, s, 0.0, -WEIGHT_QMAX, WEIGHT_QMAX, g)

    @torch.no_grad()
    def init_from(self, w: torch.Tensor) -> None:
        """``max |w| / 127`` per channel or per tensor (the PTQ weight range)."""
        self.scale.copy_(weight_scale(w, WEIGHT_QMAX, self.per_channel).reshape(-1).clamp_min(MIN_SCALE))


class _QatConvMixin:
    """The quantizers of one convolution (``qat_input``, ``qat_weight``, ``qat_output``) and its forward."""

    layer_name: str

    def _attach(self, name: str, out_channels: int, scheme: QatScheme, first: bool) -> None:
        self.layer_name = name
        self.qat_input = ActQuant("image" if first else scheme.activations)
        self.qat_weight = WeightQuant(out_channels, scheme.per_channel_weights)
        self.qat_output = ActQuant("asymmetric") if scheme.quantize_outputs else None

    def _qconv(self, x, weight, bias, conv: nn.Conv2d):
        x = self.qat_input(x)
        w = weight if self.qat_input.observing else self.qat_weight(weight)
        y = F.conv2d(x, w, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self.qat_output(y) if self.qat_output is not None else y

    def quant_grid(self) -> dict:
        """``{input, weight: {scale [C], per_channel}, output | None}`` of this layer, plain numbers."""
        return {
            "input": self.qat_input.grid(),
            "weight": {"scale": [float(v) for v in self.qat_weight.scale.detach().clamp_min(MIN_SCALE)],
                       "per_channel": self.qat_weight.per_channel, "qmin": -WEIGHT_QMAX, "qmax": WEIGHT_QMAX},
            "output": self.qat_output.grid() if self.qat_output is not None else None,
        }

    @torch.no_grad()
    def set_quant_grid(self, grid: dict) -> None:
        self.qat_input.set_grid(grid["input"])
        scale = torch.as_tensor(grid["weight"]["scale"], dtype=torch.float32).reshape(-1)
        if scale.numel() != self.qat_weight.scale.numel():
            raise YoloportError(f"QAT ranges of {self.layer_name}: {scale.numel()} weight scales for "
                                f"{self.qat_weight.scale.numel()} (another model, or another weight scheme)")
        self.qat_weight.scale.copy_(scale)
        if self.qat_output is not None:
            if not grid.get("output"):
                raise YoloportError(f"QAT ranges of {self.layer_name} have no output grid (another scheme)")
            self.qat_output.set_grid(grid["output"])


class QatConvBlock(_QatConvMixin, nn.Module):
    """A ``Conv`` block (conv + BatchNorm + activation) run as one fake-quantized convolution with the
    BatchNorm folded in (frozen statistics); same ``conv``/``bn``/``act`` parameters as the block."""

    def __init__(self, block, name: str, scheme: QatScheme, first: bool = False):
        super().__init__()
        self.conv, self.bn, self.act = block.conv, block.bn, block.act
        for attr in ("f", "i", "type", "np"):  # a top-level block's place in the network (parse_model)
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))
        self._attach(f"{name}.conv", block.conv.out_channels, scheme, first)
        self.qat_weight.init_from(self.folded()[0])

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, Cin/g, k, k], bias [C])`` of ``bn(conv(x))`` with the running statistics
        (differentiable in the conv weight and the BN affine parameters)."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = self.conv.weight * scale.view(-1, 1, 1, 1)
        b0 = self.conv.bias if self.conv.bias is not None else torch.zeros_like(bn.running_mean)
        return w, bn.bias + (b0 - bn.running_mean) * scale

    def forward(self, x):
        w, b = self.folded()
        return self.act(self._qconv(x, w, b, self.conv))


class QatConv2d(_QatConvMixin, nn.Conv2d):
    """A plain ``nn.Conv2d`` (the Detect convolutions) fake-quantized; same ``weight``/``bias`` keys."""

    def __init__(self, conv: nn.Conv2d, name: str, scheme: QatScheme, first: bool = False):
        nn.Conv2d.__init__(self, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        self.weight = conv.weight
        self.bias = conv.bias
        self._attach(name, conv.out_channels, scheme, first)
        self.qat_weight.init_from(self.weight)

    def forward(self, x):
        return self._qconv(x, self.weight, self.bias, self)


QAT_LAYER_TYPES = (QatConvBlock, QatConv2d)


# ----------------------------------------------------------------------------- wrapping


def _is_conv_block(mod) -> bool:
    from ..nn.modules import Conv

    return isinstance(mod, Conv) and isinstance(getattr(mod, "bn", None), nn.BatchNorm2d)


def _kept_float(conv_path: str, scheme: QatScheme, detect_index: int) -> bool:
    prefixes = list(scheme.float_layers) + ([f"model.{detect_index}.m"] if scheme.head_fp32 == "convs" else [])
    return any(conv_path == p or conv_path.startswith(p.rstrip(".") + ".") for p in prefixes)


def wrap_for_qat(model, scheme: QatScheme, inplace: bool = False):
    """``model`` (a float ``DetectionModel``; a copy unless ``inplace``) with every convolution the
    scheme quantizes replaced by a :class:`QatConvBlock` / :class:`QatConv2d`; weight scales start at
    ``max |w| / 127``, activation grids are set by :func:`init_ranges`. Returns the model; its layers
    are :func:`qat_layers`."""
    m = model if inplace else copy.deepcopy(model)
    if qat_layers(m):
        raise YoloportError("the model is already wrapped for QAT")
    detect_index = len(m.model) - 1
    targets = []  # (parent, child name, module, conv path)
    for name, mod in m.named_modules():
        for child_name, child in mod.named_children():
            path = f"{name}.{child_name}" if name else child_name
            if _is_conv_block(child):
                targets.append((mod, child_name, child, f"{path}.conv"))
            elif isinstance(child, nn.Conv2d) and not _is_conv_block(mod):
                targets.append((mod, child_name, child, path))
    targets = [t for t in targets if not _kept_float(t[3], scheme, detect_index)]
    if not targets:
        raise YoloportError("QAT: the model has no convolution to quantize")
    first_conv = _first_conv(m, [t[3] for t in targets])
    for parent, child_name, child, path in targets:
        first = path == first_conv
        if isinstance(child, nn.Conv2d):
            new = QatConv2d(child, path, scheme, first)
        else:
            new = QatConvBlock(child, path[: -len(".conv")], scheme, first)
        setattr(parent, child_name, new)
    m.qat_scheme = scheme
    return m


def _first_conv(model, conv_paths: list[str]) -> str | None:
    """The path of the convolution that runs first (it takes the image), among ``conv_paths``."""
    convs = dict(model.named_modules())
    order = forward_order(model, [convs[p] for p in conv_paths if p in convs])
    first = order[0] if order else None
    return next((p for p in conv_paths if convs.get(p) is first), None)


def qat_layers(model) -> list:
    """The fake-quantized layers of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, QAT_LAYER_TYPES)]


def _act_quants(model) -> list[ActQuant]:
    return [m for m in model.modules() if isinstance(m, ActQuant)]


PREACT_RULES = ("minmax", "silu_zero")
# How a SiLU convolution's output grid (``quantize_outputs`` schemes: ONNX Runtime) starts: "silu_zero", the
# range ONNX Runtime's PTQ default gives that tensor (quant.silu_ranges.zero_preact_range, here with the
# sigmoid unrounded as in the QAT graph), or "minmax". Measured: docs/notes/2026-11-30-session8.md.
PREACT_INIT = "silu_zero"
SYMMETRIC_RULES = ("max", "mse")
# How a symmetric (MLU) input grid starts: "mse", the range mlu-sim's PTQ default gives that input
# (act_range: mse, quant.range_estimators.mse_range over a histogram of |x|), or "max" (max |x|).
# Measured: docs/notes/2026-11-30-session9.md.
SYMMETRIC_INIT = "mse"


@torch.no_grad()
def init_ranges(model, batches, preact: str | None = None, symmetric: str | None = None) -> dict:
    """Post-training ranges: run the float network (quantization off) on ``batches`` (float32
    ``[B, 3, H, W]`` arrays, e.g. ``CalibrationSet.batches()``; or a zero-argument callable giving a fresh
    iterable of them), record every quantized activation's min/max and set each grid from it, as the backend's
    PTQ default would:

    - ``preact`` (default :data:`PREACT_INIT`): ``silu_zero`` then sets the output grid of each convolution
      followed by a SiLU from a histogram of its output, a second pass (:func:`silu_output_grids`);
    - ``symmetric`` (default :data:`SYMMETRIC_INIT`): ``mse`` sets each symmetric (MLU) input grid to the range
      minimising the squared rounding error of a histogram of ``|x|`` filled in the same pass
      (:func:`yoloport.quant.range_estimators.mse_range`, mlu-sim's ``act_range: mse``); ``max``: ``max |x|``.

    Returns ``{layer: {input: {...}, output: {...}|None}}`` with the observed ranges (a grid chosen by a rule
    also has ``rule``). The model's train/eval mode is kept."""
    from .range_estimators import AbsHistogram, mse_range

    preact = PREACT_INIT if preact is None else preact
    symmetric = SYMMETRIC_INIT if symmetric is None else symmetric
    if preact not in PREACT_RULES:
        raise YoloportError(f"QAT preact rule {preact!r}: choose one of {', '.join(PREACT_RULES)}")
    if symmetric not in SYMMETRIC_RULES:
        raise YoloportError(f"QAT symmetric input rule {symmetric!r}: choose one of {', '.join(SYMMETRIC_RULES)}")
    silu_outputs = [layer.qat_output for layer in qat_layers(model) if layer.qat_output is not None
                    and layer.qat_output.kind == "asymmetric" and isinstance(getattr(layer, "act", None), nn.SiLU)]
    if callable(batches):
        feed = batches
    elif preact == "silu_zero" and silu_outputs:
        kept = list(batches)  # two passes over the same images
        feed = lambda: kept  # noqa: E731
    else:
        feed = lambda: batches  # noqa: E731
    acts = _act_quants(model)
    for a in acts:
        a.lo, a.hi, a.hist = math.inf, -math.inf, None
        a.abs_hist = AbsHistogram() if symmetric == "mse" and a.kind == "symmetric" else None
    try:
        if _observe(model, acts, feed()) == 0:
            raise YoloportError("QAT calibration: the calibration set yielded no image")
        stats = {}
        for layer in qat_layers(model):
            stats[layer.layer_name] = {"input": layer.qat_input.init_from_observed(),
                                       "output": layer.qat_output.init_from_observed() if layer.qat_output is not None else None}
            h = layer.qat_input.abs_hist
            rng = mse_range(h, layer.qat_input.qmax) if h is not None else 0.0
            if rng > 0:
                layer.qat_input.set_grid({"scale": rng / layer.qat_input.qmax})
                stats[layer.layer_name]["input"] = {**stats[layer.layer_name]["input"], **layer.qat_input.grid(),
                                                    "rule": "mse"}
    finally:
        for a in acts:
            a.abs_hist = None  # the counts are summarised in the grids; do not keep them with the model
    if preact == "silu_zero" and silu_outputs:
        chosen = silu_output_grids(model, silu_outputs, feed())
        for layer in qat_layers(model):
            if id(layer.qat_output) in chosen:
                stats[layer.layer_name]["output"] = chosen[id(layer.qat_output)]
    return stats


def _observe(model, acts: list, batches) -> int:
    """Run the float network with ``acts`` observing on ``batches``; returns how many batches ran."""
    was_training = model.training
    for a in acts:
        a.observing = True
    model.eval()
    n = 0
    try:
        for x in batches:
            p = next(model.parameters())
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(p.device))
            n += 1
    finally:
        for a in acts:
            a.observing = False
        model.train(was_training)
    return n


def silu_output_grids(model, outputs: list, batches, bins: int | None = None) -> dict:
    """Set each of ``outputs`` (the :class:`ActQuant` of a SiLU convolution's output, observed once already:
    ``lo``/``hi`` hold its range) to the range :func:`yoloport.quant.silu_ranges.zero_preact_range` picks from
    a histogram of the output over ``batches`` (a second pass), the sigmoid unrounded (the QAT graph's SiLU is
    float; the next rounding's step taken as MinMax's of the SiLU output). Returns ``{id(quantizer): {lo, hi,
    scale, zero_point, qmin, qmax, rule, observed}}`` for those set."""
    from .silu_ranges import HIST_BINS, zero_preact_range

    bins = int(bins or HIST_BINS)
    live = [a for a in outputs if math.isfinite(a.lo) and a.hi > a.lo]
    for a in live:
        a.hist = torch.zeros(bins, dtype=torch.float64)
    try:
        _observe(model, _act_quants(model), batches)  # every quantizer observing: the float network, as the first pass
        out = {}
        for a in live:
            counts = a.hist.numpy()
            centers = a.lo + (np.arange(bins) + 0.5) * (a.hi - a.lo) / bins
            lo, hi = zero_preact_range(centers, counts, None, lambda _x_range: None)
            grid = asymmetric_grid(lo, hi) or (MIN_SCALE, 0.0)
            a.scale.fill_(grid[0])
            a.zero_point.fill_(grid[1])
            out[id(a)] = {"lo": lo, "hi": hi, **a.grid(), "rule": "silu_zero", "observed": [a.lo, a.hi]}
        return out
    finally:
        for a in live:
            a.hist = None


def learned_ranges(model) -> dict:
    """``{conv path: {input, weight, output}}`` (:meth:`_QatConvMixin.quant_grid`) of every layer."""
    return {layer.layer_name: layer.quant_grid() for layer in qat_layers(model)}


def float_state_dict(model) -> dict:
    """The wrapped model's state dict without its quantizers: the float model's keys."""
    return {k: v for k, v in model.state_dict().items() if f".{QAT_PREFIX}" not in f".{k}"}


def float_model(model):
    """The trained weights as an ordinary float ``DetectionModel`` (names, stride, image size kept)."""
    from ..models import model_from_state

    tensors = {k: v.detach().float().cpu() for k, v in float_state_dict(model).items()}
    out = model_from_state(model.yaml, tensors, names=list(model.names), stride=model.stride.tolist())
    out.img_size = getattr(model, "img_size", None)
    for attr in ("source", "model_key"):
        if getattr(model, attr, None) is not None:
            setattr(out, attr, getattr(model, attr))
    return out.eval()


def rebuild(model, scheme: QatScheme, ranges: dict):
    """The fake-quantized model of the float ``model`` with the grids ``ranges`` (:func:`learned_ranges`)."""
    q = wrap_for_qat(model, scheme).eval()
    layers = {layer.layer_name: layer for layer in qat_layers(q)}
    missing = sorted(set(layers) - set(ranges))
    extra = sorted(set(ranges) - set(layers))
    if missing or extra:
        raise YoloportError(f"QAT ranges do not fit the model and scheme (no range for {missing[:3]}; "
                            f"ranges of layers it does not quantize: {extra[:3]})")
    for name, layer in layers.items():
        layer.set_quant_grid(ranges[name])
    return q


# ----------------------------------------------------------------------------- training hook


class QatHook:
    """What :func:`yoloport.engine.train.train` calls to run its loop on the fake-quantized model:
    ``wrap(model)`` once the float model is built (wrap, then PTQ ranges from ``calibration``),
    ``for_saving(model)`` / ``checkpoint_meta(model)`` when an epoch's weights are saved (the float
    weights, with the learned grids in the checkpoint's metadata under ``qat``)."""

    resumable = False

    def __init__(self, scheme: QatScheme, calibration, calib_batch: int = 1, log=print):
        self.scheme = scheme
        self.calibration = calibration
        self.calib_batch = calib_batch
        self.log = log
        self.ptq_stats: dict = {}

    def wrap(self, model):
        q = wrap_for_qat(model, self.scheme, inplace=True)
        self.ptq_stats = init_ranges(q, lambda: self.calibration.batches(self.calib_batch))
        self.log(f"QAT: {len(qat_layers(q))} convolutions fake-quantized ({self.scheme.activations} activations, "
                 f"weights per {'channel' if self.scheme.per_channel_weights else 'tensor'}"
                 f"{', outputs rounded' if self.scheme.quantize_outputs else ''}; head_fp32={self.scheme.head_fp32}), "
                 f"ranges from {len(self.calibration)} calibration image(s)")
        return q

    def for_saving(self, model):
        return float_model(model)

    def checkpoint_meta(self, model) -> dict:
        return {"qat": {"scheme": self.scheme.to_dict(), "ranges": learned_ranges(model)}}


def ranges_from_checkpoint(meta: dict) -> tuple[QatScheme, dict]:
    """``(scheme, ranges)`` a QAT run stored in a checkpoint's metadata; a YoloportError if it has none."""
    q = meta.get("qat") if isinstance(meta, dict) else None
    if not isinstance(q, dict) or not isinstance(q.get("ranges"), dict) or not isinstance(q.get("scheme"), dict):
        raise YoloportError("the checkpoint holds no QAT ranges (it was not written by 'yoloport qat')")
    return QatScheme.from_dict(q["scheme"]), q["ranges"]


@dataclass
class PrequantizedModel:
    """What a backend builds a pre-quantized (QAT) artifact from (``build_prequantized``):

    - ``ranges``: the learned grids, ``{conv path: {input, weight, output}}`` (:func:`learned_ranges`);
    - ``scheme``: the :class:`QatScheme` they were trained for;
    - ``qdq_onnx``: the exported graph with those grids as QuantizeLinear/DequantizeLinear pairs
      (:func:`yoloport.deploy.qdq_export.insert_qdq`), for backends that run an ONNX graph;
    - ``calibration``: the calibration set the ranges started from (recorded in the sidecar);
    - ``info``: what the sidecar records about the fine-tuning (run folder, epochs, checkpoint).
    """

    ranges: dict
    scheme: QatScheme
    qdq_onnx: object = None
    calibration: object = None
    info: dict | None = None

    def sidecar_record(self) -> dict:
        return {"method": "quantization-aware fine-tuning (learned scales and zero points, LSQ)",
                "scheme": self.scheme.to_dict(), "layers": len(self.ranges), **(self.info or {})}
