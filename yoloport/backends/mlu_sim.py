"""``mlu-sim``: a SIMULATION, in PyTorch, of Cambricon MLU int8 inference. No Cambricon software runs.

Cambricon's toolkit (torch_mlu / CNML / MagicMind) cannot be installed here, so this backend
reproduces its int8 scheme with fake quantization on yoloport's own ``DetectionModel``; its numbers
estimate what an MLU would do and are labelled ``simulated`` everywhere (sidecar, ``describe()``).

The scheme (that of Cambricon's PyTorch ``quantize`` API the seed project used):

- every convolution quantizes its **input** and its **weight** to symmetric int8
  (``q = clip(round(x / s), -127, 127)``, ``s = range / 127``; no zero point); the integer products are
  summed exactly, as the hardware's int32 accumulator does (so the figures do not depend on the thread
  count), then scaled by ``s_x * s_w``; bias and everything that is not a convolution (activations, add,
  concat, upsample, pooling, the head's decode) stay in float - float32 here, or float16 with
  ``half=True`` (MLUs run them in half precision);
- activation ``range`` comes from calibration: the largest ``|x|`` seen over all calibration
  batches, or with ``use_avg`` the *average* of the per-batch maxima (clips rare outliers), or with
  ``act_range='mse'`` / ``'percentile'`` the range that minimises the squared quantization error /
  the ``act_percentile``-th percentile of ``|x|`` over a histogram of all calibration activations
  (:mod:`yoloport.quant.range_estimators`; Cambricon's toolchain takes user-set tensor ranges, so this
  is a calibration choice, not another scheme), times ``data_scale`` (a factor on the range: < 1 clips,
  > 1 leaves headroom);
- ``firstconv``: the first convolution takes the uint8 image with the mean/std normalisation folded
  into it, so its input is quantized as uint8 0..255 exactly (``s = 1/255``): no loss on real images;
- weights per tensor (``range = max |w|``, or with ``weight_range='mse'`` the range minimising the
  weight's squared error) or, with ``per_channel``, per output channel;
- BatchNorm is folded into the convolutions before quantization (``fuse_bn``, as the deployed graph).

The network output is decoded and NMS'd on the host (yoloport's numpy decode + class-aware NMS) and
returned in the layout of Cambricon's ``yolov5_detection_output``: ``count [B, 1]`` and rows
``[B, max_det, 7]`` of (batch, class, score, x1, y1, x2, y2) - the ``end2end`` head mode, a keypoint
head's rows with its ``2K`` landmark coordinates after the box - or, with
``output='raw'``, as the raw head convolutions for SQNR comparisons.

Artifact: ``model.mlusim.safetensors`` = float weights + the calibrated scales (+ JSON metadata) and
the sidecar ``model.mlusim.safetensors.json`` with ``simulated: true``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import YoloportError
from ..ops.postprocess import HeadSpec, postprocess
from ..quant.error import sqnr_db  # noqa: F401 - part of this module's interface (tests, benchmarks)
from ..quant.fake_quant import fake_quant  # noqa: F401 - part of this module's interface (tests)
from ..quant.fake_quant import forward_order, weight_scale
from ..quant.float_scope import scope_from_qconfig
from ..quant.range_estimators import AbsHistogram, activation_range_from, check_range_keys, weight_range_mse
from .base import Runner, model_fingerprint, read_sidecar, write_sidecar
from .spec import BackendSpec
from ..data.letterbox import input_multiple

NAME = "mlu-sim"
ARTIFACT_NAME = "model.mlusim.safetensors"
SIMULATED_NOTE = "SIMULATION of Cambricon MLU int8 in PyTorch (fake quantization); no Cambricon software or hardware involved"
SCALE_PREFIX = "mlu_sim."
OUTPUTS = ("end2end", "raw")
DTYPES = {"int8": 127, "int16": 32767}

DEFAULT_QCONFIG = {
    "dtype": "int8",  # int8 | int16 (Cambricon offers both for conv inputs/weights)
    "use_avg": False,
    # act_range: max | mse | percentile - how a conv input's range is chosen (yoloport.quant.range_estimators);
    # weight_range: max | mse - a weight's range (per tensor, or per channel with per_channel). The default
    # recipe (MSE input ranges, max|w| weights as Cambricon's quantizer takes them, ptq bias_correction below),
    # measured per tensor on unseen images (issue 11; yolov5n-v6.1 at 640, 128 calib2017 images, seeds 0-4, drop
    # in points): coco-extra val2017 +0.29/+0.51/+0.75/+1.04/+0.90 (mean +0.70; max ranges without bias
    # correction, seeds 0-2: +0.69/+1.31/+1.60, +1.20), COCO128 +0.82/+1.20/+0.70/+0.56/+0.66 (+0.78; was
    # +2.44/+1.83/+1.69, +1.99); docs/notes/2026-11-30-mlusim-ranges.md
    "act_range": "mse",
    "act_percentile": 99.99,  # the percentile of |x| with act_range='percentile'
    "weight_range": "max",
    "data_scale": 1.0,
    "firstconv": True,
    "per_channel": False,
    "fuse_bn": True,
    "half": False,  # non-conv ops in float16 (as on the MLU)
    "output": "end2end",
    "conf_thres": 0.25,
    "iou_thres": 0.45,
    "max_det": 300,
    "calib_batch": 1,
    "ptq": ("bias_correction",),  # PTQ steps applied to the float model before export (yoloport.quant.recipe.STEPS; [] for none)
    "ptq_options": None,  # per-step keyword arguments, e.g. {"adaround": {"iters": 100}}
}

SPEC = BackendSpec(
    runs_onnx=False,
    name=NAME,
    summary="SIMULATED Cambricon MLU int8 (fake quantization in PyTorch; no Cambricon toolkit involved)",
    install="pip install 'yoloport[train]' (torch)",
    precisions=("fp32", "int8"),
    qconfig_defaults=DEFAULT_QCONFIG,
    export_opset=None,  # runs the PyTorch model; the ONNX is linted, not used
    lint_target="mlu",
    act_scheme="symmetric",
    per_channel_weights=False,
    quantizes_outputs=False,
    # 'convs': the Detect convolutions stay float ('tail', float anyway, is the decode after them). Measured per
    # tensor (issue 11; yolov5n-v6.1 at 640, 128 calib2017 images, seeds 0/1/2, drop in points, unseen images):
    # coco-extra val2017 tail +1.60/+2.55/+2.27, convs +0.69/+1.31/+1.60; COCO128 tail +2.93/+2.70/+2.40,
    # convs +2.44/+1.83/+1.69; docs/notes/2026-11-30-accuracy.md
    default_head_fp32="convs",
    # per channel keeps the recipe it was measured with (max ranges, no PTQ: +0.56 / +0.20). MSE input and
    # per-channel MSE weight ranges with bias correction measured +0.17 / +0.17 (docs/notes/2026-11-30-mlusim-ranges.md),
    # but clipped weight ranges reach a real MLU only in a model whose weights are clamped, which is not exported yet
    port_qconfig={"per_channel": True, "head_fp32": "convs", "act_range": "max", "weight_range": "max", "ptq": ()},
    benchmarkable=False,
    profiler=False,
    simulated_note="mlu-sim is a SIMULATION of Cambricon's MLU int8 scheme with fake quantization in PyTorch "
    "(no Cambricon toolkit can be installed here): its mAP predicts a real MLU build; it is not benchmarked.",
    output_convention="mlu",  # raw logits head fed to yolov5_detection_output (decode + NMS)
)


def resolve_qconfig(qconfig: dict | None) -> dict:
    """Validate the mlu-sim keys of ``qconfig`` and fill defaults (a new dict)."""
    given = {k: v for k, v in (qconfig or {}).items() if v is not None}
    q = dict(DEFAULT_QCONFIG)
    q.update(given)
    if _bool(q["use_avg"], "use_avg") and "act_range" not in given:
        q["act_range"] = "max"  # use_avg is the average-of-maxima variant of the max estimator
    if str(q["dtype"]).lower() not in DTYPES:
        raise YoloportError(f"mlu-sim dtype {q['dtype']!r}: choose one of {', '.join(DTYPES)}")
    q["dtype"] = str(q["dtype"]).lower()
    for k in ("use_avg", "firstconv", "per_channel", "fuse_bn", "half"):
        q[k] = _bool(q[k], k)
    try:
        q["data_scale"] = float(q["data_scale"])
    except (TypeError, ValueError):
        raise YoloportError(f"mlu-sim data_scale must be a number, got {q['data_scale']!r}") from None
    if not q["data_scale"] > 0:
        raise YoloportError(f"mlu-sim data_scale must be > 0, got {q['data_scale']}")
    if q["output"] not in OUTPUTS:
        raise YoloportError(f"mlu-sim output {q['output']!r}: choose one of {', '.join(OUTPUTS)}")
    q["conf_thres"], q["iou_thres"], q["max_det"] = float(q["conf_thres"]), float(q["iou_thres"]), int(q["max_det"])
    if not (0 <= q["conf_thres"] <= 1 and 0 <= q["iou_thres"] <= 1 and q["max_det"] > 0):
        raise YoloportError("mlu-sim conf_thres and iou_thres must be in [0, 1] and max_det > 0")
    q["calib_batch"] = max(1, int(q["calib_batch"]))
    check_range_keys(q, "mlu-sim")
    if q["use_avg"] and q["act_range"] != "max":
        raise YoloportError(f"mlu-sim use_avg averages per-batch maxima: it goes with act_range 'max', not {q['act_range']!r}")
    scope = scope_from_qconfig(q, SPEC.head_fp32(q))
    # mlu-sim runs the PyTorch model: layers and nodes are both module names (or prefixes)
    q.update(float_scope=scope.to_dict(), head_fp32=scope.head, exclude=list(dict.fromkeys(scope.nodes + scope.layers)))
    return q


def _bool(v, name: str) -> bool:
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise YoloportError(f"mlu-sim {name} must be true or false, got {v!r}")
    return bool(v)


# ----------------------------------------------------------------------------- fake quantization



class QConv(nn.Module):
    """A Conv2d whose input and weight are quantized (simulated MLU int8 convolution).

    ``mode``: ``float`` (plain conv), ``calibrate`` (conv + record the input's ``max |x|`` per batch),
    ``quant`` (quantized input and weight). ``first``: the model's first conv (``firstconv``:
    input quantized as uint8 with scale 1/255).

    In ``quant`` mode the convolution is computed as the hardware does: integer input times integer
    weight, accumulated exactly (:func:`exact_integer_conv2d`), then scaled once by
    ``input_scale * weight_scale`` and the float bias added. The result is the same number whatever
    the thread count or the order in which the CPU sums: a float convolution of the dequantized values
    rounded its partial sums in a thread-dependent order, and the next layer's rounding to int8 turned
    those last-bit differences into different detections (up to 0.5 mAP points on 100 images at one
    against two threads).
    """

    def __init__(self, conv: nn.Conv2d, name: str, first: bool = False):
        super().__init__()
        self.conv = conv
        self.name = name
        self.first = first
        self.mode = "float"
        self.qmax = 127
        self.per_channel = False
        self.firstconv = True
        self.keep_float = False  # excluded from quantization (qconfig exclude / head_fp32='convs')
        self.batch_max: list[float] = []
        self.histogram: AbsHistogram | None = None  # |x| over the calibration images (act_range mse/percentile)
        self._wint: tuple[torch.Tensor, list | None] | None = None  # (integer weight, exact chunks): integer_weight
        self.register_buffer("input_scale", torch.zeros(()))
        self.register_buffer("w_scale", torch.zeros(()))

    def forward(self, x):
        c = self.conv
        if self.mode == "calibrate":
            self.batch_max.append(float(x.detach().abs().max()))
            if self.histogram is not None:
                self.histogram.add(x)
            return c(x)
        if self.mode != "quant":
            return c(x) if x.dtype == c.weight.dtype else c(x.to(c.weight.dtype)).to(x.dtype)
        dtype = x.dtype
        scale, qmax, qmin = self.input_grid()
        xq = quantize_activation(x.float(), scale, qmax, qmin)
        wq, chunks = self.integer_weight()
        acc = exact_integer_conv2d(xq, wq, chunks, c.stride, c.padding, c.dilation, c.groups)
        y = acc.mul_(self.output_scale(scale))
        if c.bias is not None:
            y.add_(c.bias.float().view(1, -1, 1, 1))
        return y.to(dtype)

    def input_grid(self) -> tuple[float, int, int]:
        """``(scale, qmax, qmin)`` of the input: uint8 ``1/255`` for the first conv with ``firstconv``,
        else symmetric ``input_scale``."""
        if self.first and self.firstconv:
            return 1.0 / 255.0, 255, 0
        return float(self.input_scale), self.qmax, -self.qmax

    def output_scale(self, input_scale: float) -> torch.Tensor:
        """``input_scale * weight_scale`` in float32, shaped to broadcast over ``[B, C, H, W]``."""
        return (torch.tensor(input_scale, dtype=torch.float32) * self.w_scale.float()).reshape(1, -1, 1, 1)

    def integer_weight(self) -> tuple[torch.Tensor, list | None]:
        """``(q, chunks)``: the weight rounded to its integer grid (``clip(round(w / w_scale))``, float32
        holding integers) and the input-channel chunks in which a float32 convolution sums it exactly
        (:func:`exact_chunks`). Computed at the first call and kept until :meth:`set_scales`,
        :meth:`set_weight_scale` or a dtype change (``.half()``, ``.float()``, ``.to()``); a weight changed
        in place must be followed by :meth:`set_scales`."""
        if self._wint is None:
            s = self.w_scale.float()
            safe = torch.where(s > 0, s, torch.ones_like(s))
            q = torch.clamp(torch.round(self.conv.weight.detach().float() / safe), -self.qmax, self.qmax)
            q = torch.where(s > 0, q, torch.zeros_like(q))
            self._wint = (q, exact_chunks(q, self.input_grid()[1], self.conv.groups))
        return self._wint

    def quantized_weight(self) -> torch.Tensor:
        """The dequantized weight ``fake_quant(weight, w_scale)`` (float32)."""
        q, _ = self.integer_weight()
        return q * self.w_scale.float()

    def _apply(self, fn, *args, **kwargs):  # .half(), .float(), .to(): the cached weight follows the new one
        self._wint = None
        return super()._apply(fn, *args, **kwargs)

    def set_scales(self, input_scale: float, qmax: int, per_channel: bool, firstconv: bool) -> None:
        """Fix the activation scale and compute the weight scale (from the current weight)."""
        self.qmax, self.per_channel, self.firstconv = qmax, per_channel, firstconv
        self.input_scale = torch.tensor(float(input_scale))
        self.set_weight_scale(weight_scale(self.conv.weight, qmax, per_channel))

    def set_weight_scale(self, w_scale: torch.Tensor) -> None:
        """A weight scale set from outside (MSE ranges, learned grids): the integer weight follows it."""
        self.w_scale = w_scale
        self._wint = None


#: every integer of magnitude up to 2**24 is a float32: a float32 sum of such integers is exact
FLOAT32_EXACT = 2 ** 24


def exact_chunks(q_weight: torch.Tensor, input_qmax: int, groups: int = 1) -> list[tuple[int, int]] | None:
    """Input-channel ranges ``[(start, end), ...]`` over which a float32 convolution of integer inputs
    (``|x| <= input_qmax``) with the integer weight ``q_weight`` is exact: in each range, no output's
    ``sum |x| |w|`` (the bound of every partial sum, in any order) passes 2**24. One range when the whole
    convolution is within it (the usual case: int8 weights of trained convs are far from their bound);
    None when one input channel alone can pass it (int16) or a grouped convolution would need splitting:
    the caller then sums in float64."""
    per_input = q_weight.detach().double().abs().sum(dim=(2, 3)) * float(input_qmax)  # [Cout, Cin/groups]
    if float(per_input.sum(dim=1).max()) <= FLOAT32_EXACT:
        return [(0, q_weight.shape[1])]
    if groups != 1 or float(per_input.max()) > FLOAT32_EXACT:
        return None
    chunks, start, running = [], 0, torch.zeros_like(per_input[:, 0])
    for i in range(per_input.shape[1]):
        nxt = running + per_input[:, i]
        if float(nxt.max()) > FLOAT32_EXACT:
            chunks.append((start, i))
            start, nxt = i, per_input[:, i]
        running = nxt
    chunks.append((start, per_input.shape[1]))
    return chunks


def exact_integer_conv2d(xq: torch.Tensor, wq: torch.Tensor, chunks, stride, padding, dilation, groups) -> torch.Tensor:
    """The convolution of integer-valued float32 ``xq`` and ``wq``, exact (the int32 accumulator of
    the hardware): float32 over each of ``chunks`` (:func:`exact_chunks`), the chunks added in float64;
    float64 throughout when ``chunks`` is None. Returned as float32 (rounded once, when past 2**24)."""
    if chunks is None:
        return F.conv2d(xq.double(), wq.double(), None, stride, padding, dilation, groups).float()
    if len(chunks) == 1:
        return F.conv2d(xq, wq, None, stride, padding, dilation, groups)
    acc = None
    for a, b in chunks:
        part = F.conv2d(xq[:, a:b], wq[:, a:b], None, stride, padding, dilation, groups).double()
        acc = part if acc is None else acc.add_(part)
    return acc.float()


def quantize_activation(x: torch.Tensor, scale: float, qmax: int, qmin: int | None = None) -> torch.Tensor:
    """``clip(round(x / scale), qmin, qmax)`` of a float32 activation with a scalar ``scale``: the integers
    of :func:`~yoloport.quant.fake_quant.fake_quant` (the same operations in the same order), as float32,
    in one new tensor; ``x`` is left as it was. A zero scale gives zeros."""
    qmin = -qmax if qmin is None else qmin
    if not scale > 0:
        return torch.zeros_like(x)
    s = torch.tensor(scale, dtype=torch.float32)  # the 0-dim float32 tensor fake_quant divides by
    return (x / s).round_().clamp_(qmin, qmax)


def activation_range(batch_max: list[float], use_avg: bool, data_scale: float) -> float:
    """Calibrated activation range: global max (or mean of per-batch maxima) times ``data_scale``."""
    if not batch_max:
        return 0.0
    r = float(np.mean(batch_max)) if use_avg else float(np.max(batch_max))
    return r * data_scale


def wrap_convs(model, fuse_bn: bool = True) -> tuple[nn.Module, list[QConv]]:
    """A copy of ``model`` (BN folded when ``fuse_bn``) with every ``nn.Conv2d`` replaced by a
    :class:`QConv`; returns ``(model, qconvs in forward order)``. The first one is flagged ``first``."""
    if fuse_bn:
        from ..deploy.surgery import fuse_conv_bn

        m = fuse_conv_bn(model)
    else:
        m = copy.deepcopy(model).eval()
    qconvs: list[QConv] = []
    for name, mod in list(m.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.Conv2d) and not isinstance(child, QConv):
                full = f"{name}.{child_name}" if name else child_name
                q = QConv(child, full)
                setattr(mod, child_name, q)
                qconvs.append(q)
    if not qconvs:
        raise YoloportError("mlu-sim: the model has no convolution to quantize")
    order = forward_order(m, qconvs)
    order[0].first = True
    return m.eval(), order


def set_mode(qconvs: list[QConv], mode: str) -> None:
    """``float``, ``calibrate`` or ``quant`` for all convs (``quant`` leaves ``keep_float`` ones float)."""
    for q in qconvs:
        q.mode = "float" if mode == "quant" and q.keep_float else mode


def mark_float_convs(qconvs: list[QConv], exclude, head_fp32: str, detect_index: int) -> list[str]:
    """Flag the convs kept in float: names in ``exclude`` (a module name or prefix, ``model.24`` or
    ``model.0.conv``; ``Conv``/``Conv2d`` as an op type means all) and, with ``head_fp32='convs'``,
    the Detect convolutions. Returns their names."""
    ex = [str(e).strip().strip(".") for e in (exclude or []) if str(e).strip()]
    if head_fp32 == "convs":
        ex.append(f"model.{detect_index}.m")
    kept = []
    for c in qconvs:
        c.keep_float = any(e in ("Conv", "Conv2d") or c.name == e or c.name.startswith(e + ".") for e in ex)
        if c.keep_float:
            kept.append(c.name)
    return kept


@torch.no_grad()
def calibrate(qmodel, qconvs: list[QConv], batches, q: dict) -> dict:
    """Run the float model on ``batches`` (float32 ``[B,3,H,W]``), record each conv's input range and
    set the scales; returns ``{conv name: {input_scale, range, max, avg_max, batches}}`` (``range``: the
    chosen one, ``act_range``'s estimate times ``data_scale``; ``weight_range`` too when it is ``mse``).
    ``act_range`` ``mse``/``percentile`` fill a histogram of ``|x|`` per quantized conv input on the way."""
    qmax = DTYPES[q["dtype"]]
    for c in qconvs:
        c.batch_max = []
        uses_hist = q["act_range"] != "max" and not c.keep_float and not (c.first and q["firstconv"])
        c.histogram = AbsHistogram() if uses_hist else None
    set_mode(qconvs, "calibrate")
    n = 0
    for x in batches:
        qmodel(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        n += 1
    if n == 0:
        raise YoloportError("mlu-sim: the calibration set yielded no image")
    stats = {}
    for c in qconvs:
        estimator = q["act_range"] if c.histogram is not None else "max"
        rng = activation_range_from(estimator, c.histogram, c.batch_max, qmax, q["act_percentile"], q["use_avg"]) * q["data_scale"]
        c.set_scales(rng / qmax, qmax, q["per_channel"], q["firstconv"])
        stats[c.name] = {
            "input_scale": rng / qmax,
            "range": rng,
            "estimator": "float" if c.keep_float else ("avg_max" if estimator == "max" and q["use_avg"] else estimator),
            "max": float(np.max(c.batch_max)),
            "avg_max": float(np.mean(c.batch_max)),
            "batches": len(c.batch_max),
        }
        if q["weight_range"] == "mse" and not c.keep_float:
            c.set_weight_scale(_weight_scale_tensor(weight_range_mse(c.conv.weight, qmax, q["per_channel"]) / qmax,
                                                    c.conv.weight.shape[0], "mlu-sim", c.name))
            stats[c.name].update(weight_range=float((c.w_scale * qmax).max()), weight_max=float(c.conv.weight.detach().abs().max()))
        c.histogram = None  # the counts are summarised in the ranges; do not keep them with the model
    set_mode(qconvs, "quant")
    return stats


def _weight_scale_tensor(scale, out_channels: int, where, conv: str) -> torch.Tensor:
    """A stored/learned weight scale ``[C]`` or ``[1]`` as :class:`QConv` uses it (``[C,1,1,1]`` or a scalar)."""
    s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    if s.numel() == 1:
        return s.reshape(())
    if s.numel() != out_channels:
        raise YoloportError(f"{where}: {s.numel()} weight scales for conv {conv} with {out_channels} output channels")
    return s.view(-1, 1, 1, 1)


def apply_learned_scales(qconvs: list[QConv], learned: dict, q: dict) -> dict:
    """Set each quantized conv's input and weight scale from QAT's learned grids (``learned[name]``:
    ``input.scale``, ``weight.scale``); returns the sidecar's per-conv record. A conv the simulation
    quantizes without a learned grid, or a grid that is not symmetric int8, is a YoloportError."""
    qmax = DTYPES[q["dtype"]]
    stats = {}
    for c in qconvs:
        if c.keep_float:
            continue
        g = learned.get(c.name)
        if g is None:
            raise YoloportError(f"mlu-sim: no learned range for conv {c.name} (trained for another float scope?)")
        if int(g["input"]["qmin"]) != -qmax and not c.first:
            raise YoloportError(f"mlu-sim: the learned grid of {c.name} is not symmetric {q['dtype']} "
                                f"(qmin {g['input']['qmin']}): train with --backend mlu-sim")
        c.set_scales(float(g["input"]["scale"]), qmax, q["per_channel"], q["firstconv"])
        c.set_weight_scale(_weight_scale_tensor(g["weight"]["scale"], c.conv.weight.shape[0], "mlu-sim", c.name))
        stats[c.name] = {"input_scale": float(g["input"]["scale"]), "weight_scale_learned": True}
    set_mode(qconvs, "quant")
    return stats


def build_prequantized(model, onnx_path, head: HeadSpec, out_dir, prequantized, qconfig: dict | None = None) -> Path:
    """The artifact of a quantization-aware fine-tuned model: :func:`build` with its learned ranges
    (``prequantized.ranges``) and its PTQ calibration set recorded."""
    return build(model, onnx_path, head, out_dir, prequantized.calibration, qconfig, learned=prequantized.ranges)


# ----------------------------------------------------------------------------- end2end layout


def pack_detection_output(dets: list[np.ndarray], max_det: int, nkpt: int = 0) -> list[np.ndarray]:
    """Per-image ``[n, 6]`` (x1, y1, x2, y2, conf, cls) -> ``yolov5_detection_output`` layout:
    ``count [B, 1]`` int32 and ``rows [B, max_det, 7]`` float32 (batch, class, score, x1, y1, x2, y2),
    zero padded. A keypoint head's ``[n, 6 + 2K]`` detections (``nkpt = K``) give ``[B, max_det, 7 + 2K]``
    rows with the keypoints after the box (the ``end2end`` head's layout)."""
    b = len(dets)
    count = np.zeros((b, 1), np.int32)
    rows = np.zeros((b, max_det, 7 + 2 * int(nkpt)), np.float32)
    for i, d in enumerate(dets):
        d = np.asarray(d, np.float32)[:max_det]
        k = len(d)
        count[i, 0] = k
        if k:
            rows[i, :k, 0] = i
            rows[i, :k, 1] = d[:, 5]
            rows[i, :k, 2] = d[:, 4]
            rows[i, :k, 3:7] = d[:, :4]
            rows[i, :k, 7:] = d[:, 6 : 6 + 2 * int(nkpt)]
    return [count, rows]


# ----------------------------------------------------------------------------- runner


class MluSimRunner(Runner):
    """The fake-quantized model behind the Runner interface (SIMULATED MLU).

    ``output='end2end'``: ``[count [B,1], rows [B,max_det,7]]`` after host decode + NMS;
    ``output='raw'``: the ``nl`` head convolutions ``[B, na*no, H, W]``.
    """

    backend = NAME
    simulated = True

    def __init__(self, qmodel, qconvs, head_raw: HeadSpec, q: dict, input_hw=None, quantized: bool = True):
        self.model = qmodel
        self.qconvs = qconvs
        self.q = q
        self.head_raw = head_raw
        self.head = head_raw if q["output"] == "raw" else HeadSpec.from_dict({**head_raw.to_dict(), "mode": "end2end"})
        self.input_hw = tuple(input_hw) if input_hw else None
        self.batch = None
        self.stride = input_multiple(head_raw.strides)
        self.quantized = quantized
        set_mode(qconvs, "quant" if quantized else "float")
        if q["half"]:  # non-conv ops in float16; the simulated int8 convolutions keep float32 parameters
            self.model.half()
            for c in qconvs:
                c.float()

    @torch.no_grad()
    def raw(self, images: np.ndarray) -> list[np.ndarray]:
        """The head convolutions ``[B, na*no, H, W]`` (float32) of the simulated network."""
        from .registry import check_input

        x = torch.from_numpy(check_input(images, self.input_hw, NAME))
        if self.q["half"]:
            x = x.half()
        _, raw = self.model(x)
        outs = []
        for r in raw:  # [B, na, H, W, no] -> [B, na*no, H, W]
            b, na, h, w, no = r.shape
            outs.append(r.float().permute(0, 1, 4, 2, 3).reshape(b, na * no, h, w).numpy())
        return outs

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        raw = self.raw(images)
        if self.q["output"] == "raw":
            return raw
        dets = postprocess(raw, self.head_raw, self.q["conf_thres"], self.q["iou_thres"], max_det=self.q["max_det"])
        return pack_detection_output(dets, self.q["max_det"], self.head_raw.nkpt)

    def describe(self) -> dict:
        d = super().describe()
        d.update({"simulated": True, "note": SIMULATED_NOTE, "quantized": self.quantized, "dtype": self.q["dtype"]})
        return d


# ----------------------------------------------------------------------------- build / load


def build(model, onnx_path, head: HeadSpec, out_dir, calibration, qconfig: dict | None = None, learned=None) -> Path:
    """Calibrate the simulated MLU int8 model on ``calibration`` and save ``model.mlusim.safetensors``
    (float weights + scales) with a sidecar marking it ``simulated``. ``onnx_path`` is not used: the
    simulation runs the PyTorch model. Without calibration the artifact runs in float (no scales).
    ``learned``: ``{conv name: grid}`` from quantization-aware training
    (:func:`yoloport.quant.qat.learned_ranges`): its input and weight scales are used as they are
    instead of calibrated ones (stored, and read back by :func:`load`)."""
    from ..io.checkpoint import save_checkpoint
    from ..models import checkpoint_meta
    from .registry import sidecar_info

    q = resolve_qconfig(qconfig)
    quantized = (calibration is not None or learned is not None) and str(q.get("precision", "int8")) == "int8"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = copy.deepcopy(model).float().eval()
    qmodel, qconvs = wrap_convs(base, q["fuse_bn"])
    kept_float = mark_float_convs(qconvs, q["exclude"], q["head_fp32"], len(base.model) - 1)
    unknown = [e for e in q["exclude"] if e not in ("Conv", "Conv2d") and not any(c.name == e.strip(".") or c.name.startswith(e.strip(".") + ".") for c in qconvs)]
    if unknown:
        raise YoloportError(f"mlu-sim exclude {unknown} matches no convolution (names look like {qconvs[0].name}, {qconvs[-1].name})")
    if quantized and learned is not None:
        stats = apply_learned_scales(qconvs, learned, q)
    else:
        stats = calibrate(qmodel, qconvs, calibration.batches(q["calib_batch"]), q) if quantized else {}
    tensors = {k: v.detach().float().contiguous() for k, v in base.state_dict().items()}
    for c in qconvs:
        if quantized:
            tensors[f"{SCALE_PREFIX}{c.name}.input_scale"] = c.input_scale.reshape(1).float()
            tensors[f"{SCALE_PREFIX}{c.name}.weight_scale"] = c.w_scale.reshape(-1).float()
    input_hw = _input_hw(onnx_path, calibration, model)
    scales_from = "quantization-aware training (learned)" if learned is not None else "calibration"
    meta = checkpoint_meta(base, mlu_sim={"qconfig": q, "quantized": quantized, "first_conv": qconvs[0].name, "note": SIMULATED_NOTE,
                                          "learned_scales": learned is not None})
    artifact = save_checkpoint(out_dir / ARTIFACT_NAME, tensors, meta)
    head_out = head if q["output"] == "raw" else HeadSpec.from_dict({**head.to_dict(), "mode": "end2end"})
    extra = {
        "simulated": True,
        "note": SIMULATED_NOTE,
        "precision": q["dtype"] if quantized else ("fp16" if q["half"] else "fp32"),
        "mlu_sim": {
            "quantized": quantized,
            "scheme": "symmetric per-tensor activations (conv inputs), weights per-" + ("channel" if q["per_channel"] else "tensor"),
            "first_conv": qconvs[0].name,
            "convs": len(qconvs),
            "float_convs": kept_float,
            "scales": stats,
            "scales_from": scales_from,
            "source": "the PyTorch model (the ONNX is not used)",
        },
    }
    write_sidecar(artifact, sidecar_info(NAME, model, head_out, input_hw, 1, calibration, q, **extra))
    return Path(artifact)


def _input_hw(onnx_path, calibration, model) -> tuple[int, int]:
    """The input size the artifact is for: the ONNX's fixed shape, else the calibration size, else the
    model's registered size, else 640x640."""
    if onnx_path is not None and Path(onnx_path).is_file():
        import onnx

        dims = [d.dim_value for d in onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
        if len(dims) == 4 and min(dims) > 0:
            return (int(dims[2]), int(dims[3]))
    if calibration is not None:
        return tuple(calibration.img_size_hw)
    return tuple(getattr(model, "img_size", None) or (640, 640))


def load(artifact, model=None, output: str | None = None, conf_thres=None, iou_thres=None, max_det=None,
         fixed_shape: bool = True, **options) -> MluSimRunner:
    """The simulated MLU runner of ``artifact``; ``output`` (``end2end``/``raw``), ``conf_thres``,
    ``iou_thres`` and ``max_det`` override what the artifact was built with. ``fixed_shape``: accept
    only the built input size (as a compiled MLU model does); False accepts any stride multiple."""
    from ..io.checkpoint import read_checkpoint
    from ..models import model_from_state

    artifact = Path(artifact)
    info = read_sidecar(artifact, expect_backend=NAME, expect_fingerprint=model_fingerprint(model) if model is not None else None)
    tensors, meta = read_checkpoint(artifact)
    ms = meta.get("mlu_sim") or {}
    q = resolve_qconfig({**(ms.get("qconfig") or {}), **{k: v for k, v in
                         {"output": output, "conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}.items() if v is not None}})
    weights = {k: v for k, v in tensors.items() if not k.startswith(SCALE_PREFIX)}
    base = model_from_state(meta["yaml"], weights, names=meta.get("names"), stride=meta.get("stride"))
    qmodel, qconvs = wrap_convs(base, q["fuse_bn"])
    mark_float_convs(qconvs, q["exclude"], q["head_fp32"], len(base.model) - 1)
    quantized = bool(ms.get("quantized"))
    if quantized:
        qmax = DTYPES[q["dtype"]]
        for c in qconvs:
            key = f"{SCALE_PREFIX}{c.name}.input_scale"
            if key not in tensors:
                raise YoloportError(f"{artifact}: no calibrated scale for conv {c.name} (artifact from another model or version)")
            c.set_scales(float(tensors[key].reshape(-1)[0]), qmax, q["per_channel"], q["firstconv"])
            if ms.get("learned_scales") or q["weight_range"] != "max":  # QAT's learned / MSE-chosen grid, not max|w| / qmax
                c.set_weight_scale(_weight_scale_tensor(tensors[f"{SCALE_PREFIX}{c.name}.weight_scale"], c.conv.weight.shape[0],
                                                        artifact, c.name))
    head = HeadSpec.from_dict({**info["head"], "mode": "raw"})
    return MluSimRunner(qmodel, qconvs, head, q, input_hw=info.get("input_hw") if fixed_shape else None, quantized=quantized)
