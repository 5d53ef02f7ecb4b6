"""Per-layer quantization sensitivity: which convolutions int8 hurts most (pure: model + images in).

**Ranking** (:func:`layer_sensitivity`). Every convolution of the model (named by its torch module
path, ``model.0.conv``, ``model.2.m.0.cv1.conv``, ``model.24.m.2``) is quantized *alone* while the
rest of the network stays in float, and the error this one layer adds is measured on what NMS and
the IoU see (:func:`_detection_features`): every anchor's decoded box relative to the float box's
size and its class scores, weighted by the float objectness there (a background anchor weighs
almost nothing), against the float model over a few calibration images: SQNR in dB
(``10 log10(sum ref^2 / sum (ref - test)^2)``, lower is worse) and cosine similarity. Layers are
ranked worst (lowest SQNR) first; ties keep the network's forward order, so the ranking is
deterministic. (An SQNR over the raw logits, the first version, ranked the Detect convolutions
near the bottom although keeping them in float is what helps most on every backend.)

The measurement is backend-neutral and fast: it runs in PyTorch with fake quantization (BN folded
into the convolutions, as every exported graph has it): the convolution's input is quantized per
tensor over the range seen on the calibration images - ``asymmetric`` uint8 on ``[min, max]`` (the
scheme of onnxruntime, OpenVINO and RKNN; the default) or ``symmetric`` int8 on ``max |x|``
(Cambricon, mlu-sim) - and its weight to symmetric int8, per output channel (onnxruntime, OpenVINO
and RKNN defaults) or per tensor (mlu-sim's default); :func:`backend_scheme` picks what a backend
uses. For onnxruntime and RKNN, whose int8 graphs also round the Detect convolutions' outputs (the
graph outputs), those convolutions quantize their output too (:func:`backend_quantizes_outputs`).
The first convolution takes the image as uint8, which is exact. It does not run the backend's own
quantizer, so it estimates *where* int8 hurts, not each backend's numbers (the quantization of
non-convolution ops, bias correction or an NPU's fused layers differ); the search below measures
each backend for real.

The scheme a backend uses (:attr:`~yoloport.backends.spec.BackendSpec.act_scheme`,
``per_channel_weights``, ``quantizes_outputs``) is passed in by the caller; this module knows no backend.
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..errors import YoloportError
from .error import TensorStats
from .fake_quant import fake_quant, fake_quant_asym, forward_order, weight_scale

METHOD_NOTE = (
    "ranking: each convolution quantized alone (input {act} per tensor, weight symmetric int8 per "
    "{weights}{outputs}, calibrated ranges, BN folded; PyTorch fake quantization), error of the decoded "
    "boxes (relative to their size) and scores, weighted by objectness, against float over {n} calibration image(s)"
)


@dataclass
class LayerSensitivity:
    """One convolution's row of the ranking (``rank`` 1 = worst)."""

    name: str  # torch module path, e.g. model.2.m.0.cv1.conv
    type: str  # block and conv shape, e.g. "C3 conv 3x3/1 16->16"
    index: int  # position in the forward order
    sqnr_db: float
    cosine: float
    rank: int = 0
    node: str | None = None  # the backend's (ONNX) node name, when mapped
    ort_sqnr_db: float | None = None  # onnxruntime QDQ debug: accumulated error at this conv's output

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sqnr_db"] = _json_float(self.sqnr_db)
        if self.ort_sqnr_db is not None:
            d["ort_sqnr_db"] = _json_float(self.ort_sqnr_db)
        else:
            d.pop("ort_sqnr_db")
        return d


@dataclass
class SensitivityReport:
    """The ranking plus the fully quantized (all convs int8) reference error."""

    layers: list[LayerSensitivity]
    full_sqnr_db: float
    full_cosine: float
    n_images: int
    per_channel: bool
    method: str = ""
    seconds: float = 0.0
    act_scheme: str = "asymmetric"
    quant_outputs: bool = False

    def ranked(self) -> list[LayerSensitivity]:
        return sorted(self.layers, key=lambda r: r.rank)

    def names(self) -> list[str]:
        """Layer names, worst first."""
        return [r.name for r in self.ranked()]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "n_images": self.n_images,
            "per_channel_weights": self.per_channel,
            "activations": self.act_scheme,
            "detect_outputs_quantized": self.quant_outputs,
            "all_int8": {"sqnr_db": _json_float(self.full_sqnr_db), "cosine": self.full_cosine},
            "seconds": round(self.seconds, 2),
            "layers": [r.to_dict() for r in self.ranked()],
        }


def _json_float(v: float):
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")

# ----------------------------------------------------------------------------- layers


def conv_type(model, name: str, conv) -> str:
    """``"<block> conv KxK/S Cin->Cout"`` for a conv at module path ``name`` (``g`` when grouped)."""
    m = re.match(r"model\.(\d+)\.", name)
    block = type(model.model[int(m.group(1))]).__name__ if m else "?"
    k, s = conv.kernel_size, conv.stride
    txt = f"{block} conv {k[0]}x{k[1]}/{s[0]} {conv.in_channels}->{conv.out_channels}"
    return txt + (f" g{conv.groups}" if conv.groups > 1 else "")


def detect_index(model) -> int:
    """Index of the Detect layer in ``model.model`` (the last one)."""
    return len(model.model) - 1

def named_convs(model):
    """``[(module path, nn.Conv2d)]`` of every convolution in ``model``."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]

# ----------------------------------------------------------------------------- ranking


def _stack_images(images) -> np.ndarray:
    arrs = [np.asarray(a, dtype=np.float32) for a in images]
    arrs = [a[None] if a.ndim == 3 else a for a in arrs]
    if not arrs:
        raise YoloportError("sensitivity needs at least one image to measure the error on")
    return np.ascontiguousarray(np.concatenate(arrs, 0))


def _block_outputs(qmodel, x0, cache: list | None = None, start: int = 0) -> list:
    """Every block's output of ``DetectionModel.forward`` on ``x0`` (a tensor), in order; with ``cache``
    (a float run's outputs, unchanged when only blocks from ``start`` on are quantized) the blocks
    before ``start`` are taken from it instead of recomputed."""
    y = list(cache[:start]) if cache is not None else []
    x = y[-1] if y else x0
    for m in qmodel.model[len(y):]:
        inp = x if m.f == -1 else (y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f])
        x = m(inp)
        y.append(x)
    return y


def _run_from(qmodel, cache: list, start: int, x0):
    """``DetectionModel.forward`` resumed at block ``start`` (:func:`_block_outputs`); the last output."""
    return _block_outputs(qmodel, x0, cache, start)[-1]


def _decoded(out) -> np.ndarray:
    """The Detect head's decoded predictions (eval forward ``(decoded, raw)``): ``[B, anchors, no]``
    float64 rows of ``x, y, w, h`` in pixels, objectness and class probabilities."""
    d = out[0] if isinstance(out, (tuple, list)) else out
    return d.detach().float().numpy().astype(np.float64)


def _detection_features(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ref`` and ``test`` (:func:`_decoded`) as what NMS and the IoU see, flattened per image: each
    anchor's box relative to the float box's size (``x/w, y/h, w/w, h/h``: an error of 2 px matters
    on a 10 px box, not on a 300 px one) and its scores ``objectness * class``, the row scaled by the
    square root of the float objectness there, so that squared errors (and the SQNR) count in
    proportion to how likely the anchor holds an object."""
    size = np.maximum(ref[..., 2:4], 1.0)
    weight = np.sqrt(ref[..., 4:5])

    def features(a):
        return np.concatenate([a[..., 0:2] / size, a[..., 2:4] / size, a[..., 4:5] * a[..., 5:]], -1) * weight

    return features(ref).reshape(ref.shape[0], -1), features(test).reshape(test.shape[0], -1)


def _block_of(name: str) -> int:
    m = re.match(r"model\.(\d+)\.", name)
    return int(m.group(1)) if m else 0


def rank_layers(rows: list[LayerSensitivity]) -> list[LayerSensitivity]:
    """Assign ``rank`` (1 = lowest SQNR; ties: lower cosine, then forward order); returns them sorted."""
    def key(r):
        s = r.sqnr_db if not math.isnan(r.sqnr_db) else -math.inf
        c = r.cosine if not math.isnan(r.cosine) else -math.inf
        return (s, c, r.index)

    out = sorted(rows, key=key)
    for i, r in enumerate(out, 1):
        r.rank = i
    return out
ACT_SCHEMES = ("asymmetric", "symmetric")


def _record_range(t, lo: list[float], hi: list[float]) -> None:
    """Append the min and the max of tensor ``t`` (one calibration batch, any shape) to ``lo`` and ``hi``."""
    lo.append(float(t.detach().min()))
    hi.append(float(t.detach().max()))


class _SensConv:
    """Fake quantization around one ``nn.Conv2d`` (a forward pre-hook on its input, the weight
    swapped while active): calibrate records the input's min/max per batch; ``active`` quantizes the
    input (``symmetric`` int8 on ``max |x|`` - Cambricon/mlu-sim - or ``asymmetric`` uint8 on
    ``[min, max]`` - onnxruntime, OpenVINO, RKNN) and the weight (symmetric int8, per channel or per
    tensor)."""

    def __init__(self, name: str, conv, scheme: str, per_channel: bool, first: bool = False, quant_output: bool = False):
        self.name, self.conv, self.scheme, self.first = name, conv, scheme, first
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.out_lo: list[float] = []
        self.out_hi: list[float] = []
        self.calibrating = self.active = False
        w = conv.weight.detach()
        self.w_float = w.clone()
        self.w_quant = fake_quant(w.float(), weight_scale(w, 127, per_channel), 127).to(w.dtype)
        self.hooks = [conv.register_forward_pre_hook(self._pre)]
        if quant_output:  # a graph output the backend quantizes (asymmetric uint8, as onnxruntime and RKNN)
            self.hooks.append(conv.register_forward_hook(self._post))

    def _post(self, _mod, _inputs, y):
        if self.calibrating:
            _record_range(y, self.out_lo, self.out_hi)
            return None
        if not self.active:
            return None
        return fake_quant_asym(y, min(self.out_lo), max(self.out_hi))

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()

    def _pre(self, _mod, inputs):
        import torch

        x = inputs[0]
        if self.calibrating:
            _record_range(x, self.lo, self.hi)
            return None
        if not self.active:
            return None
        if self.first:  # the image: uint8 0..255 exactly (mlu-sim firstconv; minmax 0..1 elsewhere)
            return (fake_quant(x, torch.tensor(1.0 / 255.0), 255, 0),)
        lo, hi = min(self.lo), max(self.hi)
        if self.scheme == "asymmetric":
            return (fake_quant_asym(x, lo, hi),)
        r = max(abs(lo), abs(hi))
        return (fake_quant(x, torch.tensor(r / 127.0), 127),)

    def set_active(self, on: bool) -> None:
        import torch

        self.active = bool(on)
        with torch.no_grad():
            self.conv.weight.copy_(self.w_quant if on else self.w_float)


def _wrap_for_sensitivity(model, scheme: str, per_channel: bool, quant_outputs: bool = False):
    """A BN-folded copy of ``model`` and one :class:`_SensConv` per convolution, in forward order
    (``quant_outputs``: the Detect convolutions quantize their outputs too)."""
    from torch import nn

    from ..deploy.surgery import fuse_conv_bn

    m = fuse_conv_bn(copy.deepcopy(model).float().eval())
    names = {id(c): n for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}
    if not names:
        raise YoloportError("sensitivity: the model has no convolution")
    convs = [(names[id(c)], c) for c in forward_order(m, [c for c in m.modules() if id(c) in names])]
    head = f"model.{detect_index(m)}.m."
    wrapped = [_SensConv(n, c, scheme, per_channel, first=(i == 0), quant_output=quant_outputs and n.startswith(head))
               for i, (n, c) in enumerate(convs)]
    return m, wrapped


def layer_sensitivity(model, calibration, images=None, n_images: int = 8, per_channel: bool = True,
                      act_scheme: str = "asymmetric", quant_outputs: bool = False, chunk: int = 4,
                      progress: Callable[[int, int, str], None] | None = None) -> SensitivityReport:
    """Rank ``model``'s convolutions by the head-output error each adds when it alone is int8.

    ``calibration``: a CalibrationSet (or any iterable of float32 ``[1|B, 3, H, W]`` arrays) the
    activation ranges come from; ``images``: what the error is measured on (default: the first
    ``n_images`` calibration inputs). ``per_channel``: weight scales per output channel (else per
    tensor). ``act_scheme``: ``asymmetric`` uint8 activations on the calibrated ``[min, max]``
    (onnxruntime, OpenVINO, RKNN) or ``symmetric`` int8 on ``max |x|`` (Cambricon, mlu-sim).
    ``quant_outputs``: the Detect convolutions also quantize their outputs (asymmetric uint8 over the
    calibrated range), as onnxruntime's and RKNN's int8 graphs do (:func:`backend_quantizes_outputs`).
    ``chunk``: images per forward pass; ``progress(done, total, layer)`` is called before each
    measurement. See the module docstring for the scheme.

    Only the blocks from the quantized layer's onwards are recomputed (earlier ones are the float
    run's outputs, cached), which makes a full ranking cost about half the forward passes.
    """
    import torch


    if act_scheme not in ACT_SCHEMES:
        raise YoloportError(f"activation scheme {act_scheme!r}: choose one of {', '.join(ACT_SCHEMES)}")
    t0 = time.perf_counter()
    qmodel, qconvs = _wrap_for_sensitivity(model, act_scheme, per_channel, quant_outputs)
    source = calibration.batches(1) if hasattr(calibration, "batches") else iter(calibration)
    for c in qconvs:
        c.calibrating = True
    n_cal = 0
    with torch.no_grad():
        for b in source:
            qmodel(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)))
            n_cal += 1
    for c in qconvs:
        c.calibrating = False
    if n_cal == 0:
        raise YoloportError("sensitivity: the calibration set yielded no image")
    if images is None:
        images = []
        for a in (calibration if hasattr(calibration, "batches") else []):
            images.append(a)
            if len(images) >= n_images:
                break
        if not images:
            raise YoloportError("sensitivity: give images to measure on (the calibration set is not re-iterable)")
    x = _stack_images(images)
    full = TensorStats("all")
    stats = [TensorStats(c.name) for c in qconvs]
    with torch.no_grad():
        for i0 in range(0, x.shape[0], chunk):
            xb = torch.from_numpy(x[i0 : i0 + chunk])
            cache = _block_outputs(qmodel, xb)
            ref = _decoded(cache[-1])
            for c in qconvs:
                c.set_active(True)
            full.add(*_detection_features(ref, _decoded(qmodel(xb))))
            for c in qconvs:
                c.set_active(False)
            for i, target in enumerate(qconvs):
                if progress:
                    progress(i0 // chunk * len(qconvs) + i + 1, -(-x.shape[0] // chunk) * len(qconvs), target.name)
                target.set_active(True)
                test = _decoded(_run_from(qmodel, cache, _block_of(target.name), xb))
                stats[i].add(*_detection_features(ref, test))
                target.set_active(False)
            del cache
    for c in qconvs:
        c.remove()
    rows = []
    for i, (target, st) in enumerate(zip(qconvs, stats)):
        d = st.to_dict()
        rows.append(LayerSensitivity(target.name, conv_type(qmodel, target.name, target.conv), i, float(d["sqnr_db"]),
                                     float(d["cosine"])))
    fd = full.to_dict()
    rank_layers(rows)
    note = METHOD_NOTE.format(weights="channel" if per_channel else "tensor", n=int(x.shape[0]),
                              outputs="; Detect outputs asymmetric uint8" if quant_outputs else "",
                              act="asymmetric uint8 [min, max]" if act_scheme == "asymmetric" else "symmetric int8 max|x|")
    return SensitivityReport(rows, float(fd["sqnr_db"]), float(fd["cosine"]), int(x.shape[0]), bool(per_channel),
                             note, time.perf_counter() - t0, act_scheme, bool(quant_outputs))

# ----------------------------------------------------------------------------- table


def format_ranking(report: SensitivityReport, top: int | None = None, nodes: dict[str, str] | None = None) -> str:
    """The ranking as a text table (worst first; ``top`` rows), with the fully-int8 line below."""
    rows = report.ranked()[: top or None]
    w = max([len("layer")] + [len(r.name) for r in rows])
    tw = max([len("type")] + [len(r.type) for r in rows])
    ort = any(r.ort_sqnr_db is not None for r in rows)
    head = f"{'rank':>4}  {'layer':<{w}}  {'type':<{tw}}  {'SQNR dB':>8}  {'cosine':>9}"
    if ort:
        head += f"  {'ORT acc dB':>10}"
    if nodes:
        head += "  node"
    lines = [head]
    for r in rows:
        line = f"{r.rank:>4}  {r.name:<{w}}  {r.type:<{tw}}  {r.sqnr_db:>8.2f}  {r.cosine:>9.6f}"
        if ort:
            line += f"  {r.ort_sqnr_db:>10.2f}" if r.ort_sqnr_db is not None else f"  {'-':>10}"
        if nodes:
            line += f"  {nodes.get(r.name, '-')}"
        lines.append(line)
    lines.append(f"all {len(report.layers)} convs int8: SQNR {report.full_sqnr_db:.2f} dB, cosine {report.full_cosine:.6f}")
    if ort:
        lines.append("ORT acc dB: the conv's output in onnxruntime's fully int8 QDQ model vs fp32 (accumulated error)")
    return "\n".join(lines)
