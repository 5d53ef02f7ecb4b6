"""Per-layer quantization sensitivity and sensitivity-guided mixed precision.

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

**Mixed precision** (:func:`search_mixed_precision`). The backend's artifact is built again with
layers kept in float and each build validated on a labelled data set (mAP@0.5:0.95 against the
torch fp32 reference on the same data). Two strategies: ``greedy`` (the default,
:func:`greedy_precision_loop`) walks the ranking worst first and keeps a layer in float only if the
measured mAP rises with it, until the drop is at most ``max_drop`` points; ``prefix``
(:func:`mixed_precision_loop`) keeps the worst ``K`` for ``K`` = 0, 1, 2, 4, 8, ... and stops at the
first ``K`` that meets the target. Greedy exists because single-layer errors do not add up: on
onnxruntime, keeping only ``model.1.conv``'s weights in float *lowered* the output SQNR of the
otherwise int8 yolov5n (21.3 -> 19.8 dB; 20.6 dB with graph optimisations off, so not a kernel
effect; every activation's QDQ scale was identical in both graphs), and on COCO128 one more float
layer moved the prefix search from 0.62 to 1.57 points. The cause is not understood; the search
measures instead of trusting the ranking. How each backend keeps a
layer in float (:func:`float_layers_qconfig`): onnxruntime ``nodes_to_exclude`` (the ONNX Conv
node and its activation nodes), OpenVINO NNCF ``IgnoredScope`` (the IR keeps the ONNX names: ``<node>/WithoutBiases`` and the
bias ``Add`` ``<node>``), RKNN hybrid quantization (the conv's input and output tensors in ``float16``
or ``int16``), mlu-sim ``exclude`` (torch module names). Layers a backend keeps in float anyway (the
Detect convolutions with ``head_fp32='convs'``, onnxruntime's default) are skipped. Note that on
onnxruntime the layer's input still passes through the QuantizeLinear/DequantizeLinear pair its
producer gives it (a quantized op consumes it too), as does its activation's output when the next
op is quantized.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..deploy.onnx_graph import tensor_consumers
from ..errors import YoloportError
from ..engine.val import validate_runner  # module attribute: tests replace it to make the search deterministic

METHOD_NOTE = (
    "ranking: each convolution quantized alone (input {act} per tensor, weight symmetric int8 per "
    "{weights}{outputs}, calibrated ranges, BN folded; PyTorch fake quantization), error of the decoded "
    "boxes (relative to their size) and scores, weighted by objectness, against float over {n} calibration image(s)"
)
# the activation scheme each backend quantizes with (the ranking emulates it)
BACKEND_ACT_SCHEME = {"onnxruntime": "asymmetric", "openvino": "asymmetric", "rknn": "asymmetric", "mlu-sim": "symmetric"}


def backend_scheme(backend: str | None, qconfig: dict | None = None) -> tuple[str, bool]:
    """``(activation scheme, per-channel weights)`` a ranking for ``backend`` should emulate: mlu-sim
    symmetric activations and per-tensor weights (its defaults), the others asymmetric activations
    and per-channel weights; ``qconfig``'s ``per_channel`` (onnxruntime, mlu-sim) or
    ``quantized_method`` (rknn ``layer``) override the weights."""
    q = qconfig or {}
    act = BACKEND_ACT_SCHEME.get(backend or "", "asymmetric")
    per_channel = backend != "mlu-sim"
    if q.get("per_channel") is not None:
        per_channel = bool(q["per_channel"])
    if backend == "rknn" and q.get("quantized_method"):
        per_channel = q["quantized_method"] == "channel"
    return act, per_channel


# backends whose int8 graphs quantize the head convolutions' outputs too (graph outputs): onnxruntime's
# QDQ puts a QuantizeLinear/DequantizeLinear pair on every quantized Conv's output, RKNN returns int8
# tensors; NNCF (OpenVINO) and the MLU quantize only what enters a convolution
BACKEND_QUANTIZES_OUTPUTS = {"onnxruntime": True, "rknn": True, "openvino": False, "mlu-sim": False}


def backend_quantizes_outputs(backend: str | None) -> bool:
    """Whether ``backend``'s int8 build quantizes the Detect convolutions' outputs (the ranking then
    quantizes them with the convolution: :func:`layer_sensitivity` ``quant_outputs``)."""
    return BACKEND_QUANTIZES_OUTPUTS.get(backend or "", False)


# the head_fp32 each backend uses when the qconfig names none (see the backend modules)
DEFAULT_HEAD_FP32 = {"onnxruntime": "convs", "openvino": "tail", "rknn": "tail", "mlu-sim": "tail"}
FLOAT_DTYPES = ("float16", "int16")


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


# ----------------------------------------------------------------------------- layers and names


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


def onnx_name_to_module(node_name: str) -> str:
    """ONNX node name from yoloport's exporter -> torch module path.

    The TorchScript exporter names a node by the scopes of the modules *called* on the way to it,
    each relative to the previous one: ``/model.2/m/m.0/cv1/conv/Conv`` is ``model.2.m.0.cv1.conv``
    (the called Sequential ``m`` and its child ``m.0``), ``/model.24/m.0/Conv`` is ``model.24.m.0``.
    """
    segs = [s for s in node_name.strip("/").split("/") if s][:-1]  # drop the op part ("Conv")
    path: list[str] = []
    for seg in segs:
        head, _, tail = seg.rpartition(".")
        if path and head and path[-1] == head and tail.isdigit():
            path.append(tail)  # "m" then "m.0" -> m.0
        else:
            path.extend(seg.split("."))
    return ".".join(path)


def onnx_conv_names(onnx_model, layer_names: Sequence[str]) -> dict[str, str]:
    """``{torch module path: ONNX Conv node name}`` for ``layer_names``.

    Names are matched through :func:`onnx_name_to_module`; if that does not account for every layer
    but the graph has as many Conv nodes as there are layers, they are paired in order (the exporter
    keeps the forward order). Anything else is a YoloportError.
    """
    import onnx

    m = onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model
    nodes = [n.name for n in m.graph.node if n.op_type == "Conv"]
    by_module = {onnx_name_to_module(n): n for n in nodes if n}
    out = {name: by_module[name] for name in layer_names if name in by_module}
    if len(out) == len(layer_names):
        return out
    if len(nodes) == len(layer_names) and all(nodes):
        return dict(zip(layer_names, nodes))
    missing = [n for n in layer_names if n not in out]
    raise YoloportError(
        f"cannot map {len(missing)} convolution(s) to the ONNX graph's Conv nodes (first: {missing[0]}; "
        f"the graph has {len(nodes)} Conv nodes, e.g. {nodes[:1]})"
    )


class ConvIO(NamedTuple):
    """A Conv node's data input tensor (``""`` for the image), output tensor and activation nodes."""

    input: str
    output: str
    activation: tuple[str, ...] = ()


ACTIVATION_OPS = {"Relu", "LeakyRelu", "HardSwish", "HardSigmoid", "Clip", "Elu", "Selu"}


def onnx_conv_tensors(onnx_model, nodes: Sequence[str]) -> dict[str, ConvIO]:
    """``{Conv node name: ConvIO}``. A Detect convolution's output is a graph output (``raw0`` ...),
    not ``<scope>/...``; ``activation`` is the conv's own SiLU (``Sigmoid`` and the ``Mul`` of the
    conv output by it) or single activation op, ``()`` when there is none (the Detect convs)."""
    import onnx

    m = onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model
    graph_inputs = {i.name for i in m.graph.input}
    consumers = tensor_consumers(m.graph)
    want = set(nodes)
    out = {}
    for n in m.graph.node:
        if n.name not in want:
            continue
        y = n.output[0]
        users = consumers.get(y, [])
        act: tuple[str, ...] = ()
        sig = [u for u in users if u.op_type == "Sigmoid"]
        if sig:
            mul = [u for u in users if u.op_type == "Mul" and sig[0].output[0] in u.input]
            if mul:
                act = (sig[0].name, mul[0].name)
        elif len(users) == 1 and users[0].op_type in ACTIVATION_OPS:
            act = (users[0].name,)
        out[n.name] = ConvIO("" if n.input[0] in graph_inputs else n.input[0], y, act)
    return out


def float_layers_qconfig(backend: str, layers: Sequence[str], onnx_names: dict[str, str] | None = None,
                         float_dtype: str = "float16", onnx_tensors: dict[str, ConvIO] | None = None) -> dict:
    """The qconfig entries that keep ``layers`` (torch module paths) out of int8 on ``backend``.

    onnxruntime: ``exclude`` = ONNX Conv node names and, from ``onnx_tensors``, their activation
    nodes (``nodes_to_exclude``: the conv runs on float weights and its output and activation are not
    rounded; its input keeps the QDQ its producer gives it, and so does the activation's output
    when the next op is quantized - measured on yolov5n at 640, the conv alone lowered the output
    SQNR, 21.5 vs 22.4 dB with its SiLU); openvino: ``exclude`` = ``<node>*`` globs (the IR's
    ``<node>/WithoutBiases`` convolution and its bias ``Add``) for NNCF's ignored scope (no weight or
    input quantizer); rknn: ``hybrid`` = the conv's output and input tensors from ``onnx_tensors``
    (:func:`onnx_conv_tensors`; without it the conv's scope ``/model.1/conv``, which misses a Detect
    convolution whose output is a graph output), in ``float16`` or ``int16`` - measured on a tiny
    model, the output alone did not help, output + input did; mlu-sim: ``exclude`` = the module
    names. ``K = 0`` gives ``{}``.
    """
    from ..backends.registry import canonical_name

    backend = canonical_name(backend)
    layers = list(layers)
    if float_dtype not in FLOAT_DTYPES:
        raise YoloportError(f"float dtype {float_dtype!r}: choose one of {', '.join(FLOAT_DTYPES)}")
    if not layers:
        return {}
    if backend == "mlu-sim":
        return {"exclude": layers}
    if onnx_names is None:
        raise YoloportError(f"{backend}: the ONNX node names of the layers are needed")
    nodes = [onnx_names[n] for n in layers]
    if backend == "onnxruntime":
        acts = [a for n in nodes for a in ((onnx_tensors or {}).get(n) or ConvIO("", "")).activation]
        return {"exclude": nodes + acts}
    if backend == "openvino":
        return {"exclude": [n + "*" for n in nodes]}
    if backend == "rknn":
        hybrid = {}
        for n in nodes:
            t_in, t_out, _ = (onnx_tensors or {}).get(n) or ConvIO("", n.rsplit("/", 1)[0])
            hybrid[t_out] = float_dtype
            if t_in:
                hybrid[t_in] = float_dtype
        return {"hybrid": hybrid}
    raise YoloportError(f"mixed precision is not available for the {backend} backend")


def backend_float_anyway(backend: str, model, qconfig: dict | None) -> set[str]:
    """Layers ``backend`` keeps in float with ``qconfig`` whatever the search asks: the Detect
    convolutions when ``head_fp32`` is ``convs`` (onnxruntime's default)."""
    from ..backends.registry import canonical_name

    backend = canonical_name(backend)
    head = (qconfig or {}).get("head_fp32") or DEFAULT_HEAD_FP32.get(backend, "tail")
    if head != "convs":
        return set()
    prefix = f"model.{detect_index(model)}.m."
    return {n for n, _ in _named_convs(model) if n.startswith(prefix)}


def _named_convs(model):
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


# ----------------------------------------------------------------------------- ranking


def _stack_images(images) -> np.ndarray:
    arrs = [np.asarray(a, dtype=np.float32) for a in images]
    arrs = [a[None] if a.ndim == 3 else a for a in arrs]
    if not arrs:
        raise YoloportError("sensitivity needs at least one image to measure the error on")
    return np.ascontiguousarray(np.concatenate(arrs, 0))


def _block_outputs(qmodel, x) -> list:
    """Every block's output of ``DetectionModel.forward`` on ``x`` (a tensor), in order."""
    y: list = []
    for m in qmodel.model:
        inp = x if m.f == -1 else (y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f])
        x = m(inp)
        y.append(x)
    return y


def _run_from(qmodel, cache: list, start: int, x0):
    """``DetectionModel.forward`` resumed at block ``start``: blocks before it are taken from ``cache``
    (their float outputs, unchanged when only later layers are quantized). Returns the last output."""
    y = list(cache[:start])
    x = cache[start - 1] if start > 0 else x0
    for m in qmodel.model[start:]:
        inp = x if m.f == -1 else (y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f])
        x = m(inp)
        y.append(x)
    return x


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


def _fake_quant_asym(x, lo: float, hi: float):
    """Asymmetric uint8 fake quantization over the calibrated range ``[lo, hi]`` (widened to hold 0,
    as onnxruntime's MinMax calibration does): ``(clip(round(x / s) + z, 0, 255) - z) * s``."""
    import torch

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return torch.zeros_like(x)
    s = (hi - lo) / 255.0
    z = float(round(-lo / s))
    return (torch.clamp(torch.round(x / s) + z, 0, 255) - z) * s


class _SensConv:
    """Fake quantization around one ``nn.Conv2d`` (a forward pre-hook on its input, the weight
    swapped while active): calibrate records the input's min/max per batch; ``active`` quantizes the
    input (``symmetric`` int8 on ``max |x|`` - Cambricon/mlu-sim - or ``asymmetric`` uint8 on
    ``[min, max]`` - onnxruntime, OpenVINO, RKNN) and the weight (symmetric int8, per channel or per
    tensor)."""

    def __init__(self, name: str, conv, scheme: str, per_channel: bool, first: bool = False, quant_output: bool = False):
        from ..backends.mlu_sim import fake_quant, weight_scale

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
            self.out_lo.append(float(y.detach().min()))
            self.out_hi.append(float(y.detach().max()))
            return None
        if not self.active:
            return None
        return _fake_quant_asym(y, min(self.out_lo), max(self.out_hi))

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()

    def _pre(self, _mod, inputs):
        from ..backends.mlu_sim import fake_quant
        import torch

        x = inputs[0]
        if self.calibrating:
            self.lo.append(float(x.detach().min()))
            self.hi.append(float(x.detach().max()))
            return None
        if not self.active:
            return None
        if self.first:  # the image: uint8 0..255 exactly (mlu-sim firstconv; minmax 0..1 elsewhere)
            return (fake_quant(x, torch.tensor(1.0 / 255.0), 255, 0),)
        lo, hi = min(self.lo), max(self.hi)
        if self.scheme == "asymmetric":
            return (_fake_quant_asym(x, lo, hi),)
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

    from ..backends.mlu_sim import forward_order
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

    from .compare import TensorStats

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


# ----------------------------------------------------------------------------- onnxruntime QDQ debug


def _with_conv_outputs(model_path, nodes: Sequence[str]):
    """The ONNX model at ``model_path`` with the output tensor of each Conv in ``nodes`` added to the
    graph outputs (as ``qdq_loss_debug.modify_model_output_intermediate_tensors`` does, in memory);
    returns ``(serialized model, {node: tensor})``."""
    import onnx

    m = onnx.load(str(model_path))
    want = set(nodes)
    tensors = {n.name: n.output[0] for n in m.graph.node if n.op_type == "Conv" and n.name in want}
    have = {o.name for o in m.graph.output}
    for t in tensors.values():
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    return m.SerializeToString(), tensors


def ort_activation_errors(fp32_onnx, int8_onnx, images, nodes: Sequence[str]) -> dict[str, dict]:
    """onnxruntime's own view (the ``qdq_loss_debug`` idea): each Conv's output in the fully quantized
    QDQ model ``int8_onnx`` against the same tensor of ``fp32_onnx``, over ``images`` (float32
    ``[N, 3, H, W]``, fed one at a time). The error is *accumulated* (everything upstream is int8
    too), so it shows where the quantized network drifts, not what one layer adds.
    Returns ``{node: {"sqnr_db", "cosine"}}`` for the nodes present in both graphs."""
    import onnxruntime as ort

    from .compare import TensorStats

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    runs = []
    for path in (fp32_onnx, int8_onnx):
        blob, tensors = _with_conv_outputs(path, nodes)
        sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        runs.append((sess, tensors))
    common = [n for n in nodes if n in runs[0][1] and n in runs[1][1]]
    stats = {n: TensorStats(n) for n in common}
    x = _stack_images(images)
    for i in range(x.shape[0]):
        outs = []
        for sess, tensors in runs:
            names = [tensors[n] for n in common]
            outs.append(dict(zip(common, sess.run(names, {sess.get_inputs()[0].name: x[i : i + 1]}))))
        for n in common:
            stats[n].add(outs[0][n], outs[1][n])
    return {n: {k: st.to_dict()[k] for k in ("sqnr_db", "cosine")} for n, st in stats.items()}


def attach_ort_debug(report: SensitivityReport, model, calibration, out_dir, img_hw, qconfig: dict | None = None,
                     n_images: int = 8) -> Path:
    """Build onnxruntime's fully int8 QDQ model (``qconfig``, defaults otherwise) in ``out_dir`` and
    fill each row's ``node`` and ``ort_sqnr_db`` (:func:`ort_activation_errors` on the first
    ``n_images`` calibration inputs). Returns the int8 ONNX path."""
    from ..backends.registry import build_artifact, get_backend
    from ..deploy.export import export_onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opset = getattr(get_backend("onnxruntime"), "EXPORT_OPSET", None)
    fp32, _ = export_onnx(model, out_dir / "model.fp32.onnx", img_size_hw=tuple(img_hw), mode="raw", opset=opset, overwrite=True)
    art = build_artifact("onnxruntime", model, out_dir, img_hw, calibration, {**(qconfig or {}), "precision": "int8"},
                         mode="raw", onnx_path=fp32)
    names = onnx_conv_names(fp32, [r.name for r in report.layers])
    images = []
    for a in calibration:
        images.append(a)
        if len(images) >= n_images:
            break
    errs = ort_activation_errors(fp32, art, images, list(names.values()))
    for r in report.layers:
        r.node = names.get(r.name)
        e = errs.get(r.node or "")
        r.ort_sqnr_db = float(e["sqnr_db"]) if e else None
    return Path(art)


# ----------------------------------------------------------------------------- mixed precision


def k_schedule(max_float: int, n_candidates: int) -> list[int]:
    """``0, 1, 2, 4, 8, ...`` up to ``min(max_float, n_candidates)``, which is always the last step."""
    if max_float < 0:
        raise YoloportError(f"--max-float must be >= 0, got {max_float}")
    cap = min(int(max_float), int(n_candidates))
    ks, k = [0], 1
    while k < cap:
        ks.append(k)
        k *= 2
    if cap > 0 and ks[-1] != cap:
        ks.append(cap)
    return ks


@dataclass
class MixedStep:
    k: int
    layers: list[str]
    mAP50_95: float
    drop: float  # points (x100) below the reference
    artifact: str | None = None
    seconds: float = 0.0
    backend_config: dict = field(default_factory=dict)
    kept: bool | None = None  # greedy: whether the step's last layer stayed in float (None: prefix, or K=0)


def drop_points(ref_map: float, value: float) -> float:
    """mAP drop in points: ``(ref - value) * 100`` (mAP given as fractions)."""
    return round((float(ref_map) - float(value)) * 100.0, 4)


STRATEGIES = ("greedy", "prefix")


def _measure(layers: list[str], evaluate, ref_map: float, log) -> MixedStep:
    t0 = time.perf_counter()
    value, artifact, cfg = evaluate(list(layers))
    step = MixedStep(len(layers), list(layers), float(value), drop_points(ref_map, value), str(artifact) if artifact else None,
                     round(time.perf_counter() - t0, 2), dict(cfg or {}))
    if log:
        log(f"K={step.k:<3d} mAP50-95 {step.mAP50_95:.4f}  drop {step.drop:+.2f} points  ({step.seconds:.0f} s)")
    return step


def _loop_result(ref_map, max_drop, max_float, met, done: list[MixedStep], final: MixedStep, strategy: str) -> dict:
    return {
        "reference_mAP50_95": float(ref_map),
        "max_drop": float(max_drop),
        "max_float": int(max_float),
        "strategy": strategy,
        "met": met,
        "steps": [asdict(s) for s in done],
        "final": asdict(final),
    }


def _resolve(candidates) -> list[str]:
    """The candidate layers, calling ``candidates`` first when it is a callable (a lazy ranking)."""
    return list(candidates() if callable(candidates) else candidates)


def _check_max_drop(max_drop) -> None:
    if max_drop is None or not max_drop >= 0:
        raise YoloportError(f"--max-drop must be >= 0 points, got {max_drop}")


def mixed_precision_loop(candidates: Sequence[str], evaluate: Callable[[list[str]], tuple[float, str | None, dict]],
                         ref_map: float, max_drop: float = 0.5, max_float: int = 16,
                         log: Callable[[str], None] | None = None, steps: Sequence[int] | None = None) -> dict:
    """The ``prefix`` strategy: keep the first ``K`` of ``candidates`` (worst first) in float for
    ``K`` in :func:`k_schedule` until the mAP drop is at most ``max_drop`` points (``steps``:
    explicit K values instead, each capped at ``max_float`` and the number of candidates).

    ``evaluate(layers) -> (mAP50_95, artifact, backend_config)``. Returns ``{steps, met, final,
    max_drop, max_float, reference_mAP50_95, strategy}``: ``final`` is the first step meeting the
    target, else the step with the smallest drop (fewest layers on ties).
    """
    _check_max_drop(max_drop)
    candidates = _resolve(candidates)
    cap = min(int(max_float), len(candidates))
    ks = k_schedule(max_float, len(candidates)) if steps is None else sorted({min(max(int(k), 0), cap) for k in steps})
    done: list[MixedStep] = []
    met = False
    for k in ks:
        done.append(_measure(list(candidates[:k]), evaluate, ref_map, log))
        if done[-1].drop <= max_drop:
            met = True
            break
    if not done:
        raise YoloportError("the mixed-precision search has no step to run")
    final = done[-1] if met else min(done, key=lambda s: (s.drop, s.k))
    return _loop_result(ref_map, max_drop, max_float, met, done, final, "prefix")


def greedy_precision_loop(candidates: Sequence[str], evaluate: Callable[[list[str]], tuple[float, str | None, dict]],
                          ref_map: float, max_drop: float = 0.5, max_float: int = 16, max_tries: int | None = None,
                          log: Callable[[str], None] | None = None) -> dict:
    """The ``greedy`` strategy: walk ``candidates`` worst first and keep a layer in float only if
    the backend's measured mAP rises with it (over the best so far); stop once the drop is at most
    ``max_drop`` points, ``max_float`` layers are kept or ``max_tries`` candidates were tried
    (default ``2 * max_float``).

    Why not just the worst K: one layer's error alone does not add up across layers (rounding errors
    partly cancel), and on COCO128-sized sets one 1x1 convolution can move mAP50-95 by half a point
    either way, so a layer that measures no gain is dropped instead of carried. Same arguments and
    result as :func:`mixed_precision_loop`; each step also says whether its last layer was ``kept``.
    ``candidates`` may be a callable returning them, called only when the all-int8 build misses the
    target (a ranking is not computed for a backend that needs none).
    """
    _check_max_drop(max_drop)
    tries = 2 * int(max_float) if max_tries is None else int(max_tries)
    if tries < 0:
        raise YoloportError(f"--max-tries must be >= 0, got {max_tries}")
    best = _measure([], evaluate, ref_map, log)
    done = [best]
    for cand in (_resolve(candidates)[:tries] if best.drop > max_drop else []):
        if best.drop <= max_drop or best.k >= int(max_float):
            break
        trial = _measure(best.layers + [cand], evaluate, ref_map, log)
        kept = trial.mAP50_95 > best.mAP50_95
        trial.kept = kept
        done.append(trial)
        if log:
            log(f"      {cand}: {'kept in float' if kept else 'no gain, back to int8'}")
        if kept:
            best = trial
    return _loop_result(ref_map, max_drop, max_float, best.drop <= max_drop, done, best, "greedy")


def search_mixed_precision(backend: str, model, ranking: Sequence[str], calibration, data, img_hw, out_dir,
                           max_drop: float = 0.5, max_float: int = 16, qconfig: dict | None = None,
                           float_dtype: str = "float16", ref_map: float | None = None, batch_size: int = 8,
                           threads: int | None = None, log: Callable[[str], None] | None = None,
                           steps: Sequence[int] | None = None, strategy: str = "greedy",
                           max_tries: int | None = None) -> dict:
    """Sensitivity-guided mixed precision on ``backend`` (see the module docstring).

    ``ranking``: layer names worst first (:meth:`SensitivityReport.names`), or a callable returning
    them (called only if the all-int8 build misses the target); ``data``: a data YAML
    validated with :func:`yoloport.engine.val.validate_runner` at the fixed ``img_hw``;
    ``ref_map``: the torch fp32 mAP50-95 on ``data`` (measured when None). ``strategy``:
    ``greedy`` (:func:`greedy_precision_loop`, ``max_tries``) or ``prefix``
    (:func:`mixed_precision_loop`, ``steps``). Each step's artifact is built in
    ``out_dir/step<NN>-k<K>``; the fp32 ONNX is exported once into ``out_dir``.
    """
    if strategy not in STRATEGIES:
        raise YoloportError(f"mixed-precision strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    from ..backends.registry import build_artifact, canonical_name, get_backend, load_runner
    from ..backends.torch_backend import TorchRunner
    from ..deploy.export import DEFAULT_OPSET, export_onnx

    backend = canonical_name(backend)
    if backend == "torch":
        raise YoloportError("torch is the fp32 reference; choose onnxruntime, openvino, rknn or mlu-sim")
    out_dir = Path(out_dir).resolve()  # absolute: the RKNN toolkit's hybrid steps run in another folder
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(model.names)
    if ref_map is None:
        ref_map = float(validate_runner(TorchRunner(model, threads=threads), data, img_hw, batch_size, names=names)["mAP50_95"])
        if log:
            log(f"torch fp32 reference mAP50-95 {ref_map:.4f}")
    skip = backend_float_anyway(backend, model, qconfig)

    def candidates():
        return [n for n in (ranking() if callable(ranking) else ranking) if n not in skip]

    onnx_path = onnx_names = onnx_tensors = None
    if backend != "mlu-sim":
        opset = getattr(get_backend(backend), "EXPORT_OPSET", None) or DEFAULT_OPSET
        onnx_path, _ = export_onnx(model, out_dir / "model.fp32.onnx", img_size_hw=tuple(img_hw), mode="raw", opset=opset,
                                   overwrite=True)
        onnx_names = onnx_conv_names(onnx_path, [n for n, _ in _named_convs(model) if n not in skip])
        onnx_tensors = onnx_conv_tensors(onnx_path, list(onnx_names.values()))
    base_q = dict(qconfig or {})
    counter = itertools.count()

    def evaluate(layers):
        extra = float_layers_qconfig(backend, layers, onnx_names, float_dtype, onnx_tensors)
        q = {**base_q, "precision": "int8"}
        for key, val in extra.items():  # merge with the user's own exclude / hybrid entries
            if isinstance(val, dict):
                q[key] = {**dict(base_q.get(key) or {}), **val}
            else:
                q[key] = list(base_q.get(key) or []) + list(val)
        step_dir = out_dir / f"step{next(counter):02d}-k{len(layers)}"
        art = build_artifact(backend, model, step_dir, img_hw, calibration, q, mode="raw", onnx_path=onnx_path)
        runner = load_runner(backend, artifact=art, model=model, threads=threads, output="raw")
        try:
            res = validate_runner(runner, data, img_hw, batch_size, names=names)
        finally:
            runner.close()
        return float(res["mAP50_95"]), art, extra

    if strategy == "greedy":
        result = greedy_precision_loop(candidates, evaluate, ref_map, max_drop, max_float, max_tries, log)
    else:
        result = mixed_precision_loop(candidates, evaluate, ref_map, max_drop, max_float, log, steps)
    result.update(backend=backend, float_dtype=float_dtype if backend == "rknn" else "float32",
                  skipped_float_anyway=sorted(skip), onnx=str(onnx_path) if onnx_path else None)
    return result


# ----------------------------------------------------------------------------- tables


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


def format_mixed(result: dict) -> str:
    """The mixed-precision steps as a text table plus the outcome line."""
    greedy = result.get("strategy") == "greedy"
    tried = [s["layers"][-1] if s["layers"] else "- (all int8)" for s in result["steps"]]  # greedy: the layer tried
    w = max(len(t) for t in tried + ["tried"])
    lines = [f"{'K':>3}  {'mAP50-95':>8}  {'drop':>6}  " + (f"{'tried':<{w}}  kept" if greedy else "float layers")]
    for s, t in zip(result["steps"], tried):
        if greedy:
            kept = {True: "yes", False: "no"}.get(s.get("kept"), "")
            lines.append(f"{s['k']:>3}  {s['mAP50_95']:>8.4f}  {s['drop']:>+6.2f}  {t:<{w}}  {kept}".rstrip())
            continue
        shown = ", ".join(s["layers"][:4]) + (f", ... (+{len(s['layers']) - 4})" if len(s["layers"]) > 4 else "")
        lines.append(f"{s['k']:>3}  {s['mAP50_95']:>8.4f}  {s['drop']:>+6.2f}  {shown or '-'}")
    f = result["final"]
    verdict = "met" if result["met"] else "NOT met"
    lines.append(f"target drop <= {result['max_drop']} points {verdict}: K={f['k']}, mAP50-95 {f['mAP50_95']:.4f} "
                 f"(fp32 {result['reference_mAP50_95']:.4f}, drop {f['drop']:.2f}), artifact {f['artifact']}")
    if f["layers"]:
        lines.append(f"kept in float: {', '.join(f['layers'])}")
    return "\n".join(lines)
