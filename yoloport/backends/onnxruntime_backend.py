"""ONNX Runtime backend: fp32 and static int8 (QDQ) on the CPU execution provider.

int8 follows ONNX Runtime's own recipe as separate steps: ``quant_pre_process`` (shape inference and
graph optimisation), :func:`quantize_onnx` (``quantize_static`` in QDQ format with a calibration
reader fed by :class:`~yoloport.data.calibration.CalibrationSet`), then an ordinary session. Defaults
are what measures best on x86 CPUs: uint8 activations, int8 per-channel weights (U8S8; S8S8 falls back
to slow kernels), MinMax calibration with SiLU-aware grids for the three roundings of every SiLU unit
(``preact_range='silu_zero'``, ``sigmoid_range='unit'``, ``mul_range='mse'``,
:mod:`.onnxruntime_silu_grids`), and the Detect head kept in float
(``head_fp32='convs'``: its output convolutions and everything after them - sigmoid, grid/anchor decode,
concatenations).
``'tail'`` quantizes the Detect convolutions too, which in QDQ also rounds their outputs (the raw
logits of box, objectness and classes share one per-tensor uint8 scale). Measured on COCO128 at 640
(32 calibration images, mAP50-95 drop against fp32): yolov5n-v6.1 0.011 (tail) vs 0.004 (convs),
yolov5s-v5.0 0.009 vs 0.002, at the same speed.

Running an artifact (:func:`load`, :class:`OrtRunner`) needs ``onnxruntime`` alone: ``onnx`` and
``onnxruntime.quantization`` are imported inside the functions that build (the light runtime install
has neither).
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ..deploy.onnx_graph import ConvIO, conv_map, tensor_consumers
from ..errors import YoloportError
from ..ops.postprocess import HeadSpec
from ..quant.float_scope import FloatScope, scope_from_qconfig
from .onnxruntime_ranges import HISTOGRAM_METHODS, floor_ranges, histogram_ranges, range_overrides, reader_feeds, silu_inputs
from .onnxruntime_silu_grids import grids_requested, resolve_grid_options, silu_grid_ranges
from .onnxruntime_concat_grid import CHOICES as CONCAT_GRID_CHOICES, share_concat_grids
from .onnxruntime_silu_op import CHOICES as SILU_OP_CHOICES, fuse_silu_units
from .base import Runner, RuntimeProfile, _check_images, _check_runs, mean_node_times, read_sidecar, write_sidecar
from .registry import artifact_size, call_fixed_batch, check_input, sidecar_info
from .spec import BackendSpec
from ..data.letterbox import input_multiple

if TYPE_CHECKING:  # annotations only: onnx is imported where a graph is built
    import onnx

NAME = "onnxruntime"
QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
CALIB_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}

DEFAULT_QCONFIG = {
    "act_type": "uint8",
    "weight_type": "int8",
    "per_channel": True,
    "calib_method": "minmax",
    "percentile": 99.999,
    "calib_bins": 2048,  # entropy/percentile: histogram bins (yoloport.backends.onnxruntime_ranges)
    "calib_quantized_bins": 128,  # entropy: bins of the quantized candidate distribution
    "calib_moving_average": False,  # minmax: ORT's moving average of per-batch min/max (CalibMovingAverage)
    "silu_floor": None,  # e.g. -6.0: lower end of every SiLU pre-activation range (onnxruntime_ranges.floor_ranges)
    # The three roundings of every Conv -> Sigmoid -> Mul (SiLU) unit get SiLU-aware uint8 grids from a
    # histogram of the pre-activation (onnxruntime_silu_grids). Same graph, same QLinearConv / QLinearSigmoid /
    # QLinearMul, same speed. Conv output ("preact_range"): "silu_zero" narrows each grid to the [lo, hi] that
    # least perturbs SiLU, lo no higher than where a clipped value still leaves the unit as exactly 0 on the
    # Mul grid it ends up with ("minmax", "silu_mse", "silu_mse_low", "silu_zero_low" also). Sigmoid output
    # ("sigmoid_range"): "unit", the whole [0, 1]. Mul output ("mul_range"): "mse", the grid that least
    # perturbs what the quantized unit computes ("minmax", "reachable" also).
    # Measured: 128 calibration images per seed (coco-extra calib2017), mAP@0.5:0.95 drop, mean of 5 seeds,
    # coco-extra val2017 / COCO128 (docs/notes/2026-11-30-ort-reachable.md, 2026-11-30-session7.md):
    #   yolov5n v6.1 640:      MinMax +0.68 / +0.84 (3 seeds); silu_zero alone +0.35 / +0.73; this +0.15 / +0.43
    #   yolov5s v5.0 640:      MinMax +1.15 / +1.40 (3 seeds); silu_zero alone +0.49 / +0.46; this +0.04 / +0.24
    #   yolov5s v5.0 736x416:  silu_zero alone +0.45 / +1.05; this +0.36 / +0.41
    # Each seed's 95% interval is about +-1 point: a single seed decides nothing; the five-seed means above do
    # improve on every model, size and set, and meet <= 0.5 on all six.
    "preact_range": "silu_zero",
    "sigmoid_range": "unit",
    "mul_range": "mse",
    # "shared": every Concat's inputs on the Concat output's grid, so QLinearConcat copies codes instead of
    # rounding them a second time (onnxruntime_concat_grid); "own": as quantize_static calibrates them.
    "concat_grid": "own",
    # How each SiLU runs between the Conv output's grid and the Mul's (onnxruntime_silu_op): "qlinear", as
    # quantize_static writes it (QLinearSigmoid + QLinearMul: the sigmoid rounded on a grid of its own);
    # "quickgelu", one fused float QuickGelu between a DequantizeLinear and a QuantizeLinear (the sigmoid
    # not rounded; sigmoid_range is then "none"). Measured, not the default (docs/notes/2026-11-30-session8.md):
    # yolov5n v6.1 640, 5 seeds, quickgelu +0.25 / +0.73 against this default's +0.15 / +0.43 (paired: +0.10
    # [-0.27, +0.59], +0.30 [-0.19, +0.59], within noise but the wrong way); yolov5s v5.0 640 outputs +1.0 dB
    # SQNR; no faster: 22.77 -> 23.26 ms (2 threads, min of 30 round-robin rounds; every conv int8: 21.08 ->
    # 21.38), more CPU per call (benchmarks/bench_ort_silu_op.py).
    "silu_op": "qlinear",
    "reduce_range": False,
    "pre_process": True,
    "ptq": (),  # PTQ steps applied to the float model before export (yoloport.quant.recipe.STEPS)
    "ptq_options": None,  # per-step keyword arguments, e.g. {"adaround": {"iters": 100}}
}

SPEC = BackendSpec(
    name=NAME,
    summary="ONNX Runtime, CPU execution provider: fp32 and static int8 (QDQ, U8S8)",
    install="pip install onnxruntime (runs an artifact); pip install 'yoloport[port]' builds one",
    precisions=("fp32", "int8"),
    qconfig_defaults=DEFAULT_QCONFIG,
    export_opset=13,  # per-channel QDQ needs DequantizeLinear with an axis (opset 13)
    lint_target="onnxruntime",
    act_scheme="asymmetric",
    per_channel_weights=True,
    quantizes_outputs=True,  # QDQ rounds every quantized Conv's output, the Detect convs' too
    qdq_rounds_conv_outputs=True,  # QLinearConv needs the Q after each Conv
    default_head_fp32="convs",  # see the module docstring for the measurement
    port_qconfig={"head_fp32": "convs"},
    benchmarkable=True,
    profiler=True,
    output_convention="ultralytics",  # one decoded [1, N, 5+nc] output, as Ultralytics exports for ONNX Runtime
    batch_dynamic=True,  # a dynamic-batch graph quantizes and runs at any batch
    # The v5.0 Focus stem stays strided slices (ORT runs them as one SpaceToDepth): its int8 QLinearConv
    # on the 3-channel image as the 6x6 stride-2 Conv was slower, yolov5s v5.0 640 int8 one thread
    # (CPU ms, min of 12 round-robin rounds) 37.6 with the slices vs 40.4 as the Conv, same SQNR against
    # torch (benchmarks/bench_focus_stem.py, docs/notes/2026-11-30-session7.md).
    focus_to_conv=False,
)


# ----------------------------------------------------------------------------- runner


GRAPH_OPTIMIZATION = {  # the Runner's ``graph_optimization`` / profile's ``--opt-level`` -> ORT's level
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
OPT_LEVELS = tuple(GRAPH_OPTIMIZATION)


def session_options(threads: int | None, graph_optimization: str) -> ort.SessionOptions:
    """Session options of the runner and the profiler: ``threads`` intra-op threads and one inter-op thread
    when ``threads`` is given (ORT's defaults otherwise), the level named ``graph_optimization`` (a key of
    :data:`GRAPH_OPTIMIZATION`; another is one YoloportError)."""
    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise YoloportError(f"onnxruntime graph optimisation must be one of {', '.join(OPT_LEVELS)}, "
                            f"got {graph_optimization!r}")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = GRAPH_OPTIMIZATION[graph_optimization]
    return so


class OrtRunner(Runner):
    """An ``InferenceSession`` on the CPU execution provider, returning the head outputs."""

    backend = NAME

    def __init__(self, path, head: HeadSpec, input_hw=None, batch=None, threads: int | None = None, stride: int = 32,
                 providers=None, graph_optimization: str = "all"):
        so = session_options(threads, graph_optimization)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime raises its own exception types
            raise YoloportError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        self.path = Path(path)
        self.head = head
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = list(inp.shape)
        self.input_hw = input_hw or (tuple(dims[2:]) if all(isinstance(d, int) for d in dims[2:]) else None)
        self.batch = batch if batch is not None else (dims[0] if isinstance(dims[0], int) else None)
        self.stride = stride
        self.threads = threads

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        x = check_input(images, self.input_hw, NAME)
        return call_fixed_batch(lambda b: self.session.run(None, {self.input_name: b}), x, self.batch)

    def describe(self) -> dict:
        return {**super().describe(), "artifact": str(self.path), "threads": self.threads}

    def close(self) -> None:
        self.session = None


def load(artifact, model=None, threads: int | None = None, **options) -> OrtRunner:
    """Load an artifact built by :func:`build` (its sidecar is checked against ``model``)."""
    from .base import model_fingerprint

    info = read_sidecar(artifact, expect_backend=NAME, expect_fingerprint=model_fingerprint(model) if model is not None else None)
    head = HeadSpec.from_dict(info["head"])
    stride = input_multiple(head.strides)
    opts = {k: v for k, v in options.items() if k in ("providers", "graph_optimization")}
    return OrtRunner(artifact, head, tuple(info["input_hw"]), info.get("batch"), threads=threads, stride=stride, **opts)


# ----------------------------------------------------------------------------- graph helpers


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name (exclusion lists refer to nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)
    return model


def _conv_downstream(model: onnx.ModelProto) -> dict[str, bool]:
    """node name -> whether some Conv consumes (directly or through other nodes) its outputs."""
    consumers = tensor_consumers(model.graph)
    down: dict[str, bool] = {}
    for n in reversed(model.graph.node):  # ONNX nodes are topologically sorted
        down[n.name] = any(c.op_type == "Conv" or down.get(c.name, False) for t in n.output for c in consumers.get(t, []))
    return down


def head_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes after the last convolution on every path (the head's decode arithmetic)."""
    down = _conv_downstream(model)
    return [n.name for n in model.graph.node if n.op_type != "Conv" and not down[n.name]]


def head_conv_nodes(model: onnx.ModelProto) -> list[str]:
    """The last convolutions (no Conv after them): the Detect head's output convolutions."""
    down = _conv_downstream(model)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and not down[n.name]]


def resolve_exclude(model: onnx.ModelProto, patterns) -> list[str]:
    """Node names matching ``patterns``: an op type (``Sigmoid``), an exact node name or a glob on
    names (``/model.24/*``). A pattern that matches nothing is a YoloportError."""
    names = [n.name for n in model.graph.node]
    op_types = {n.op_type for n in model.graph.node}
    out: list[str] = []
    for pat in patterns or []:
        if pat in op_types:
            hit = [n.name for n in model.graph.node if n.op_type == pat]
        else:
            hit = [nm for nm in names if nm == pat or fnmatch.fnmatchcase(nm, pat)]
        if not hit:
            raise YoloportError(
                f"--exclude {pat!r} matches no node or op type in the graph (op types: {', '.join(sorted(op_types))}; "
                f"node names look like {names[0]!r})"
            )
        out += [h for h in hit if h not in out]
    return out


# ----------------------------------------------------------------------------- quantization


def calibration_reader(calibration, input_name: str, batch: int):
    """An ONNX Runtime ``CalibrationDataReader`` over a CalibrationSet, stacking ``batch`` images per feed
    (the class is made here: ``onnxruntime.quantization`` is imported only when quantizing)."""
    from onnxruntime import quantization as ortq

    class _CalibReader(ortq.CalibrationDataReader):
        def __init__(self):
            self.calibration, self.input_name, self.batch = calibration, input_name, max(int(batch or 1), 1)
            self.rewind()

        def rewind(self):
            self._it = iter(self.calibration.batches(self.batch))
            self.fed = 0

        def get_next(self):
            x = next(self._it, None)
            if x is None or (x.shape[0] < self.batch and self.fed):
                return None  # a fixed-batch graph cannot take a partial last batch
            if x.shape[0] < self.batch:  # fewer images than one batch: repeat them
                x = np.concatenate([x] * (-(-self.batch // x.shape[0])), 0)[: self.batch]
            self.fed += 1
            return {self.input_name: x}

    return _CalibReader()


def resolve_qconfig(qconfig: dict | None) -> dict:
    """Defaults filled in and values checked (YoloportError for a bad one); the float scope
    (``float_scope``, ``exclude``, ``head_fp32``) is folded into ``float_scope`` with ``head_fp32`` and
    ``exclude`` kept as the user gave them."""
    cfg = {**DEFAULT_QCONFIG, **{k: v for k, v in (qconfig or {}).items() if v is not None}}
    for key, table in (("act_type", QUANT_TYPES), ("weight_type", QUANT_TYPES), ("calib_method", CALIB_METHODS)):
        cfg[key] = str(cfg[key]).lower()
        if cfg[key] not in table:
            raise YoloportError(f"onnxruntime: {key} must be one of {', '.join(table)}, got {cfg[key]!r}")
    scope = scope_from_qconfig(cfg, SPEC.head_fp32(cfg))
    cfg.update(float_scope=scope.to_dict(), head_fp32=scope.head, exclude=list(scope.nodes))
    if cfg["calib_method"] != "percentile":
        cfg.pop("percentile", None)
    check_histogram_bins(cfg)
    floor = cfg.get("silu_floor")
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor < 0):
        raise YoloportError(f"onnxruntime: silu_floor must be a negative number (e.g. -6) or None, got {floor!r}")
    resolve_silu_op(qconfig or {}, cfg)
    cfg.update(resolve_grid_options(qconfig or {}, cfg))
    cfg["concat_grid"] = str(cfg["concat_grid"]).lower()
    if cfg["concat_grid"] not in CONCAT_GRID_CHOICES:
        raise YoloportError(f"onnxruntime: concat_grid must be one of {', '.join(CONCAT_GRID_CHOICES)}, got {cfg['concat_grid']!r}")
    if cfg["calib_method"] not in HISTOGRAM_METHODS:
        cfg.pop("calib_bins", None)
        cfg.pop("calib_quantized_bins", None)
    if cfg["calib_method"] != "entropy":
        cfg.pop("calib_quantized_bins", None)
    if cfg["calib_method"] != "minmax":
        cfg.pop("calib_moving_average", None)
    return cfg


def resolve_silu_op(user: dict, cfg: dict) -> None:
    """Check ``cfg["silu_op"]`` (lower-cased in place) against the Sigmoid's grid: ``quickgelu`` leaves the
    Sigmoid unrounded, so its ``sigmoid_range`` is ``none`` (a YoloportError for another one the user gave);
    ``none`` with ``qlinear`` is a YoloportError (that graph rounds the Sigmoid)."""
    op = str(cfg.get("silu_op")).lower()
    if op not in SILU_OP_CHOICES:
        raise YoloportError(f"onnxruntime: silu_op must be one of {', '.join(SILU_OP_CHOICES)}, got {cfg.get('silu_op')!r}")
    cfg["silu_op"] = op
    given = user.get("sigmoid_range")
    given = given.lower() if isinstance(given, str) else given
    if op == "quickgelu":
        if given not in (None, "none"):
            raise YoloportError(f"onnxruntime: silu_op quickgelu does not round the Sigmoid, so it has no grid: "
                                f"sigmoid_range takes 'none', got {given!r}")
        cfg["sigmoid_range"] = "none"
    elif str(cfg.get("sigmoid_range")).lower() == "none":
        raise YoloportError("onnxruntime: sigmoid_range 'none' (the Sigmoid not rounded) needs silu_op quickgelu")


def check_histogram_bins(cfg: dict) -> None:
    """YoloportError unless ``calib_bins`` is an integer >= 16 and ``calib_quantized_bins`` an integer in
    [2, calib_bins] (entropy's threshold search needs at least as many histogram bins as quantized ones)."""
    bins, qbins = cfg.get("calib_bins"), cfg.get("calib_quantized_bins")
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 16:
        raise YoloportError(f"onnxruntime: calib_bins must be an integer >= 16, got {bins!r}")
    if not isinstance(qbins, int) or isinstance(qbins, bool) or not 2 <= qbins <= bins:
        raise YoloportError(f"onnxruntime: calib_quantized_bins must be an integer from 2 to calib_bins ({bins}), got {qbins!r}")


def float_layer_nodes(layers, conv_nodes: dict[str, str], conv_io: dict[str, ConvIO] | None = None) -> list[str]:
    """ONNX nodes that keep the convolutions ``layers`` (torch module paths) out of int8: each Conv
    node (``conv_nodes``: layer -> node) and, from ``conv_io``, its activation nodes, so neither its
    weights nor its output and activation are rounded (its input keeps the QDQ its producer gives it).
    Measured on yolov5n at 640: the conv alone lowered the output SQNR, 21.5 vs 22.4 dB with its SiLU."""
    nodes = [conv_nodes[n] for n in layers]
    acts = [a for n in nodes for a in ((conv_io or {}).get(n) or ConvIO("", "")).activation]
    return nodes + acts


def check_qconfig(qconfig: dict) -> None:
    """Raise a YoloportError for a setting this backend cannot build (before any export)."""
    SPEC.check_precision(qconfig.get("precision") or "fp32")
    resolve_qconfig(qconfig)


def quantize_onnx(onnx_in, onnx_out, calibration, qconfig: dict | None = None) -> dict:
    """Static int8 QDQ quantization of ``onnx_in`` into ``onnx_out``; returns the settings used
    (resolved qconfig plus ``excluded_nodes`` and ``pre_processed``)."""
    import onnx
    from onnxruntime import quantization as q

    cfg = resolve_qconfig(qconfig)
    onnx_out = Path(onnx_out)
    scope = FloatScope.from_any(cfg["float_scope"])
    layer_nodes = float_layer_nodes(scope.layers, *conv_map(onnx_in, scope.layers)) if scope.layers else []
    with tempfile.TemporaryDirectory(dir=onnx_out.parent) as tmp:
        src = Path(tmp) / "named.onnx"
        model = name_nodes(onnx.load(str(onnx_in)))
        onnx.save(model, str(src))
        pre_processed = False
        if cfg["pre_process"]:
            prep = Path(tmp) / "prep.onnx"
            try:
                q.quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
                model = name_nodes(onnx.load(str(prep)))
                onnx.save(model, str(prep))
                src, pre_processed = prep, True
            except Exception as e:  # pre-processing is an optimisation: fall back to the plain graph
                cfg["pre_process_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        excluded = resolve_exclude(model, list(scope.nodes) + layer_nodes)
        if cfg["head_fp32"] in ("tail", "convs"):
            excluded += [n for n in head_tail_nodes(model) if n not in excluded]
        if cfg["head_fp32"] == "convs":
            excluded += [n for n in head_conv_nodes(model) if n not in excluded]
        inp = model.graph.input[0]
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
        batch = dims[0] or 1
        if len(dims) == 4 and dims[2] and dims[3] and tuple(calibration.img_size_hw) != (dims[2], dims[3]):
            calibration = calibration.with_size((dims[2], dims[3]))  # same images, the graph's input size
        extra = {"ActivationSymmetric": cfg["act_type"] == "int8", "WeightSymmetric": True}
        if cfg.get("calib_moving_average"):
            extra["CalibMovingAverage"] = True
        reader = calibration_reader(calibration, inp.name, batch)
        calib_method = cfg["calib_method"]
        if calib_method in HISTOGRAM_METHODS or cfg.get("silu_floor") is not None:  # our settings: see onnxruntime_ranges
            try:
                ranges = histogram_ranges(src, reader_feeds(reader), calib_method, num_bins=cfg.get("calib_bins", 2048),
                                          num_quantized_bins=cfg.get("calib_quantized_bins", 128),
                                          percentile=cfg.get("percentile", 99.999))
                if cfg.get("silu_floor") is not None:
                    ranges = floor_ranges(ranges, silu_inputs(model), float(cfg["silu_floor"]))
            except Exception as e:  # onnxruntime raises its own exception types
                raise YoloportError(f"onnxruntime {calib_method} calibration failed: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''}") from e
            extra["TensorQuantOverrides"] = range_overrides(ranges)
            reader.rewind()
            calib_method = "minmax"  # ORT still calibrates; the overrides decide every range
        grids = {k: cfg[k] for k in ("preact_range", "sigmoid_range", "mul_range")}  # resolved above
        if grids_requested(grids):  # SiLU-aware grids on top of the ranges above (onnxruntime_silu_grids)
            float_outputs = {t for n in model.graph.node if n.name in excluded for t in n.output}
            try:
                silu_ranges = silu_grid_ranges(src, model, lambda: (reader.rewind(), reader_feeds(reader))[1], grids,
                                               skip=float_outputs)
            except Exception as e:  # onnxruntime raises its own exception types
                raise YoloportError(f"onnxruntime SiLU grid calibration failed: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''}") from e
            extra["TensorQuantOverrides"] = {**extra.get("TensorQuantOverrides", {}), **range_overrides(silu_ranges)}
            reader.rewind()
        staged = Path(tmp) / "quantized.onnx"
        try:
            q.quantize_static(
                str(src),
                str(staged),
                reader,
                quant_format=q.QuantFormat.QDQ,
                per_channel=bool(cfg["per_channel"]),
                reduce_range=bool(cfg["reduce_range"]),
                activation_type=getattr(q.QuantType, QUANT_TYPES[cfg["act_type"]]),
                weight_type=getattr(q.QuantType, QUANT_TYPES[cfg["weight_type"]]),
                nodes_to_exclude=excluded or None,
                calibrate_method=getattr(q.CalibrationMethod, CALIB_METHODS[calib_method]),
                extra_options=extra,
            )
        except YoloportError:
            raise
        except Exception as e:
            raise YoloportError(f"onnxruntime int8 quantization failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if cfg["concat_grid"] == "shared" or cfg["silu_op"] == "quickgelu":  # graph edits on the QDQ model
            quantized = onnx.load(str(staged))
            if cfg["concat_grid"] == "shared":
                cfg["concat_inputs_moved"] = share_concat_grids(quantized)
            if cfg["silu_op"] == "quickgelu":
                cfg["silu_units_fused"] = fuse_silu_units(quantized)
            onnx.save(quantized, str(staged))
        os.replace(staged, onnx_out)  # the artifact appears whole or not at all
    cfg.update(excluded_nodes=excluded, pre_processed=pre_processed, calibration_batches=reader.fed)
    return cfg


def build(model, onnx_path, head: HeadSpec, out_dir, calibration, qconfig: dict) -> Path:
    """fp32 (a copy of ``onnx_path``) or int8 QDQ artifact in ``out_dir``, with its sidecar."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = str(qconfig.get("precision") or ("int8" if calibration is not None else "fp32")).lower()
    onnx_path = Path(onnx_path)
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    input_hw, batch = (dims[2], dims[3]), (dims[0] or None)  # None: a dynamic batch (the graph takes any)
    if precision == "fp32":
        artifact = out_dir / "model.onnxruntime.fp32.onnx"
        if onnx_path.resolve() != artifact.resolve():
            shutil.copyfile(onnx_path, artifact)
        settings = {"precision": "fp32", **{k: v for k, v in qconfig.items() if k != "precision"}}
    elif precision == "int8":
        if calibration is None:
            raise YoloportError("onnxruntime int8 needs calibration images")
        artifact = out_dir / "model.onnxruntime.int8.onnx"
        settings = {"precision": "int8", **quantize_onnx(onnx_path, artifact, calibration, qconfig)}
        from ..quant.calib_stats import qdq_activation_ranges, range_summary

        settings["activation_ranges"] = range_summary(qdq_activation_ranges(artifact))
    else:
        raise YoloportError(f"onnxruntime builds fp32 or int8 artifacts, not {precision!r}")
    write_sidecar(
        artifact,
        sidecar_info(
            NAME, model, head, input_hw, batch, calibration if precision == "int8" else None, settings,
            precision=precision, source_onnx=str(onnx_path), build_seconds=round(time.perf_counter() - t0, 3),
            size_bytes=artifact_size(artifact), onnxruntime_version=ort.__version__,
        ),
    )
    return artifact


def build_prequantized(model, onnx_path, head: HeadSpec, out_dir, prequantized, qconfig: dict | None = None) -> Path:
    """The int8 artifact of a quantization-aware fine-tuned model: its QDQ graph
    (``prequantized.qdq_onnx``, the learned grids; ONNX Runtime fuses each DQ -> Conv -> Q into a
    QLinearConv), each float SiLU as one QuickGelu (:func:`fuse_silu_units`, exact), as
    ``model.onnxruntime.int8.onnx``, with its sidecar. ``onnx_path``: its float source."""
    t0 = time.perf_counter()
    if prequantized.qdq_onnx is None:
        raise YoloportError("onnxruntime: a pre-quantized build needs the QDQ graph of the fine-tuned model")
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qdq = onnx.load(str(prequantized.qdq_onnx))
    dims = [d.dim_value for d in qdq.graph.input[0].type.tensor_type.shape.dim]
    artifact = out_dir / "model.onnxruntime.int8.onnx"
    fused = fuse_silu_units(qdq)  # exact here: the QAT graph's sigmoids are float (onnxruntime_silu_op)
    onnx.save(qdq, str(artifact))
    settings = {**(qconfig or {}), "precision": "int8", "silu_op": "quickgelu" if fused else "qlinear",
                "silu_units_fused": fused}
    write_sidecar(
        artifact,
        sidecar_info(
            NAME, model, head, (dims[2], dims[3]), dims[0] or 1, prequantized.calibration, settings, precision="int8",
            source_onnx=str(onnx_path), quantization=prequantized.sidecar_record(),
            build_seconds=round(time.perf_counter() - t0, 3), size_bytes=artifact_size(artifact), onnxruntime_version=ort.__version__,
        ),
    )
    return artifact


# ----------------------------------------------------------------------------- profiling

# ONNX Runtime op names -> layer type (others are kept): fusions with a plain meaning.
PROFILE_LAYER_TYPES = {
    "QuickGelu": "SiLU",  # ORT fuses x * sigmoid(x) into QuickGelu(alpha=1)
    "ReorderInput": "Reorder (layout)",
    "ReorderOutput": "Reorder (layout)",
    "Upsample": "Resize",
}


def parse_ort_trace(events: list[dict], skip_runs: int = 0) -> tuple[list[list[tuple]], list[float]]:
    """ORT profiler events -> (per run: ``[(node, op_name, provider, dur_us)]`` in execution order,
    per run: wall ``model_run`` duration in us). The first ``skip_runs`` runs (warm-up) are dropped.
    A node event belongs to the ``model_run`` whose time span contains it."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"])
    kernels = sorted(
        (e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")), key=lambda e: e["ts"]
    )
    per_run: list[list[tuple]] = [[] for _ in runs]
    j = 0
    for e in kernels:
        while j < len(runs) and e["ts"] > runs[j]["ts"] + runs[j]["dur"]:
            j += 1
        if j == len(runs):
            break
        if e["ts"] < runs[j]["ts"]:
            continue
        args = e.get("args", {})
        name = str(e["name"])[: -len("_kernel_time")]
        per_run[j].append((name, str(args.get("op_name", "?")), str(args.get("provider", "")), float(e.get("dur", 0))))
    walls = [float(r["dur"]) for r in runs]
    return per_run[skip_runs:], walls[skip_runs:]


def ort_nodes(per_node: list[tuple]) -> list[tuple]:
    """``(name, op_name, provider, us)`` -> ``(name, layer type, op_name, us, provider)`` with ORT's
    layer-type mapping (:data:`PROFILE_LAYER_TYPES`)."""
    return [(name, PROFILE_LAYER_TYPES.get(op, op), op, us, kernel) for name, op, kernel, us in per_node]


def profile_run(onnx_path, images: np.ndarray, runs: int = 10, threads: int | None = None, warmup: int = 3,
                opt_level: str = "all", **_other_backends_options) -> RuntimeProfile:
    """Per-node times of ``onnx_path`` on ONNX Runtime's CPU provider over ``runs`` inferences of
    ``images`` (float32 ``[B,3,H,W]`` matching the graph) after ``warmup`` ones."""
    _check_runs(runs, warmup)
    if opt_level not in OPT_LEVELS:
        raise YoloportError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}, got {opt_level!r}")
    with tempfile.TemporaryDirectory(prefix="yoloport-ortprof-") as tmp:
        so = session_options(threads, opt_level)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        try:
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise YoloportError(f"onnxruntime cannot load {onnx_path}: {str(e).splitlines()[0]}") from None
        feed = {sess.get_inputs()[0].name: _check_images(images, sess.get_inputs()[0].shape)}
        for _ in range(warmup + runs):
            sess.run(None, feed)
        trace = sess.end_profiling()
        events = json.loads(Path(trace).read_text())
    per_run, walls = parse_ort_trace(events, skip_runs=warmup)
    nodes = ort_nodes(mean_node_times(per_run))
    notes = [f"graph optimisation level {opt_level!r} (the ORT runner uses 'all'); QuickGelu is ORT's fused x*sigmoid(x) (SiLU)"]
    if any(n[1] == "SpaceToDepth" for n in nodes):
        notes.append("ORT's optimiser rewrote the Focus slices into SpaceToDepth + Gather (see them with --opt-level none)")
    return RuntimeProfile(nodes, len(per_run), warmup, float(np.mean(walls)) if walls else None, str(onnx_path), notes)
